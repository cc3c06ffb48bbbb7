"""The long-form gold set (`data/gold/longform_gold.jsonl`) loads like any gold file and stays apart from dev and
held-out.

Its reports are long hospital-style CT reports (headers, organ-by-organ findings, numbered impression) written blind,
before any extraction was run or tuned on them. These checks only keep the file well formed, long, varied and
disjoint from the other gold sets; they never look at extraction output.
"""

import re
from collections import Counter

import pytest

from extract import evaluation as ev
from gold_checks import (DEV_GOLD, HELDOUT_GOLD, LONGFORM_GOLD, assert_no_text_shared, is_normal,
                         organ_states, organs_with_a_lesion)
from schemas.vocab import ORGANS

MIN_SENTENCES, MAX_SENTENCES = 15, 60
#: Tags the set was written to exercise; each must be on at least `MIN_REPORTS_PER_TAG` reports.
REQUIRED_TAGS = ("nodule_list", "largest_in_separate_sentence", "prior_size_same_sentence", "fat_containing",
                 "calcified", "too_small_to_characterize", "incidental_upper_abdomen", "count_lower_bound")
MIN_REPORTS_PER_TAG = 3
MIN_CHEST_NODULE_LISTS = 10

#: A leading section label ("FINDINGS:", "Liver:", "Right upper lobe, apical segment:"): letters, spaces and a
#: little punctuation, no digits, ending in a colon.
_LABEL = re.compile(r"^[A-Za-z][A-Za-z /&,()'-]{0,48}:\s*")


def count_sentences(report: str) -> int:
    """Sentences of a report, as the length checks count them.

    Line by line: a leading list dash and a leading section label ("LUNGS:", "Liver:") are removed; a line with
    nothing left ("FINDINGS:") or an all-capital title without a full stop ("CT CHEST WITHOUT CONTRAST") is a
    header-only line and counts nothing. The rest is split after `.`, `!` or `?` followed by white space (so
    "1.4 cm" is not split), and each piece holding a word of two or more letters counts once (so the "1." of a
    numbered impression item does not).
    """
    n = 0
    for line in report.splitlines():
        line = re.sub(r"^[-*]\s+", "", line.strip())
        body = _LABEL.sub("", line, count=1).strip()
        if not body or (not re.search(r"[.!?]$", body) and body == body.upper()):
            continue
        n += sum(1 for piece in re.split(r"(?<=[.!?])\s+", body) if re.search(r"[A-Za-z]{2}", piece))
    return n


@pytest.fixture(scope="module")
def longform():
    return ev.load_gold(LONGFORM_GOLD)  # the loader `rsuper eval-extraction` uses; raises GoldError if invalid


def test_count_sentences_skips_headers_and_numbers():
    text = ("CT CHEST WITHOUT CONTRAST\nFINDINGS:\nLungs: A 1.4 cm nodule (series 4, image 51). No effusion.\n"
            "IMPRESSION:\n1. Nodule.\n- Right upper lobe, apical segment: 6 mm, previously 6 mm.")
    assert count_sentences(text) == 4


def test_longform_gold_parses_every_line(longform):
    assert all(isinstance(r, ev.GoldReport) for r in longform)


def test_longform_ids_are_unique_and_distinct_from_dev_and_heldout(longform):
    ids = [r.id for r in longform]
    assert len(ids) == len(set(ids))
    assert all(i.startswith("longform-") for i in ids)
    others = {r.id for r in ev.load_gold(DEV_GOLD)} | {r.id for r in ev.load_gold(HELDOUT_GOLD)}
    assert not set(ids) & others


def test_longform_has_at_least_40_reports(longform):
    assert len(longform) >= 40


def test_longform_has_at_least_a_quarter_normal_reports(longform):
    normal = sum(is_normal(r) for r in longform)
    assert normal / len(longform) >= 0.25
    assert normal < len(longform)  # and abnormal ones too


def test_longform_has_a_lesion_in_every_organ_key(longform):
    assert organs_with_a_lesion(longform) == set(ORGANS)


def test_longform_has_some_equivocal_organs(longform):
    assert sum("equivocal" in organ_states(f) for r in longform for f in r.organs.values()) >= 2


def test_longform_reports_are_long(longform):
    counts = {r.id: count_sentences(r.report) for r in longform}
    short_or_long = {i: n for i, n in counts.items() if not MIN_SENTENCES <= n <= MAX_SENTENCES}
    assert not short_or_long
    assert sum(n > 25 for n in counts.values()) > len(counts) / 2  # a majority above 25 sentences


def test_longform_has_chest_cts_with_nodule_lists(longform):
    lists = [r for r in longform if {"chest_ct", "nodule_list"} <= set(r.phenomena)
             and "lung" in r.organs and "lesion" in organ_states(r.organs["lung"])
             and len(re.findall(r"\blobe\b|\blingula\b", r.report, re.IGNORECASE)) >= 3]
    assert len(lists) >= MIN_CHEST_NODULE_LISTS


def test_longform_covers_each_required_phenomenon(longform):
    tags = Counter(tag for r in longform for tag in set(r.phenomena))
    thin = {tag: tags[tag] for tag in REQUIRED_TAGS if tags[tag] < MIN_REPORTS_PER_TAG}
    assert not thin


def test_longform_shares_no_report_text_with_dev_or_heldout(longform):
    assert_no_text_shared(longform, ev.load_gold(DEV_GOLD) + ev.load_gold(HELDOUT_GOLD))
