"""The counts development set (`data/gold/counts_dev_gold.jsonl`) loads like any gold file and stays apart from the
other sets.

Its 30 long chest and abdomen CT reports were written blind (without reading the conversion rules) to develop lesion
counts on: nodule lists in every layout, lymph node stations, lower bounds, counts added up across sentences, the
same lesion in findings and impression. Rules may be tuned on it; the long-form set stays the measure. These checks
keep the file well formed, long and disjoint; they never look at extraction output.
"""

import re

import pytest
from test_longform_gold import count_sentences

from extract import evaluation as ev
from gold_checks import COUNTS_DEV_GOLD, DEV_GOLD, HELDOUT_GOLD, LONGFORM_GOLD, assert_no_text_shared, is_normal


@pytest.fixture(scope="module")
def counts():
    return ev.load_gold(COUNTS_DEV_GOLD)


def test_counts_ids_are_unique_and_apart_from_the_other_sets(counts):
    ids = [r.id for r in counts]
    assert len(ids) == len(set(ids)) == 30 and all(i.startswith("counts-") for i in ids)
    others = {r.id for path in (DEV_GOLD, HELDOUT_GOLD, LONGFORM_GOLD) for r in ev.load_gold(path)}
    assert not set(ids) & others


def test_counts_reports_are_long_with_lists_and_some_normal(counts):
    assert all(20 <= count_sentences(r.report) <= 50 for r in counts)
    lung_lists = [r for r in counts if len(re.findall(r"\blobe\b|\blingula\b", r.report, re.IGNORECASE)) >= 3]
    assert len(lung_lists) >= 10
    assert sum(is_normal(r) for r in counts) >= 4


def test_counts_shares_no_report_text_with_the_other_sets(counts):
    assert_no_text_shared(counts, ev.load_gold(DEV_GOLD) + ev.load_gold(HELDOUT_GOLD) + ev.load_gold(LONGFORM_GOLD))
