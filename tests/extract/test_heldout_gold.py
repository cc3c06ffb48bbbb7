"""The held-out gold set (`data/gold/heldout_gold.jsonl`) loads like any gold file and stays apart from dev.

The held-out reports were written blind (without the conversion rules or dev mismatches); these checks only
keep the file well formed and disjoint from the development set, they never look at extraction output.
"""


import pytest

from extract import evaluation as ev
from gold_checks import DEV_GOLD, HELDOUT_GOLD, assert_no_text_shared, is_normal, organs_with_a_lesion
from schemas.vocab import ORGANS


@pytest.fixture(scope="module")
def heldout():
    return ev.load_gold(HELDOUT_GOLD)  # the loader `rsuper eval-extraction` uses; raises GoldError if invalid


def test_heldout_gold_parses_every_line(heldout):
    assert all(isinstance(r, ev.GoldReport) for r in heldout)


def test_heldout_ids_are_unique_and_distinct_from_dev(heldout):
    ids = [r.id for r in heldout]
    assert len(ids) == len(set(ids))
    assert not set(ids) & {r.id for r in ev.load_gold(DEV_GOLD)}


def test_heldout_has_at_least_40_reports(heldout):
    assert len(heldout) >= 40


def test_heldout_has_at_least_a_quarter_normal_reports(heldout):
    normal = sum(is_normal(r) for r in heldout)
    assert normal / len(heldout) >= 0.25
    assert normal < len(heldout)  # and abnormal ones too


def test_heldout_has_a_lesion_in_every_organ_key(heldout):
    assert organs_with_a_lesion(heldout) == set(ORGANS)


def test_heldout_shares_no_report_text_with_dev(heldout):
    assert_no_text_shared(heldout, ev.load_gold(DEV_GOLD))
