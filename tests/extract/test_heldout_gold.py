"""The held-out gold set (`data/gold/heldout_gold.jsonl`) loads like any gold file and stays apart from dev.

The held-out reports were written blind (without the conversion rules or dev mismatches); these checks only
keep the file well formed and disjoint from the development set, they never look at extraction output.
"""

import re
from pathlib import Path

import pytest

from extract import evaluation as ev
from schemas.vocab import ORGANS

ROOT = Path(__file__).resolve().parents[2]
HELDOUT_GOLD = ROOT / "data" / "gold" / "heldout_gold.jsonl"
DEV_GOLD = ROOT / "data" / "gold" / "dev_gold.jsonl"
#: A sentence this long appearing in both sets means text was reused, not a stock phrase.
MIN_SHARED_SENTENCE_CHARS = 40


@pytest.fixture(scope="module")
def heldout():
    return ev.load_gold(HELDOUT_GOLD)  # the loader `rsuper eval-extraction` uses; raises GoldError if invalid


def _states(fields):
    state = fields["state"]
    return set(state["any_of"]) if isinstance(state, dict) else {state}


def _is_normal(report):
    """No organ that may be a lesion or equivocal."""
    return not any(_states(f) & {"lesion", "equivocal"} for f in report.organs.values())


def _sentences(text):
    parts = re.split(r"\n|(?<=[.;:])\s+", text)
    return {" ".join(p.lower().split()) for p in parts if len(p.strip()) >= MIN_SHARED_SENTENCE_CHARS}


def test_heldout_gold_parses_every_line(heldout):
    assert all(isinstance(r, ev.GoldReport) for r in heldout)


def test_heldout_ids_are_unique_and_distinct_from_dev(heldout):
    ids = [r.id for r in heldout]
    assert len(ids) == len(set(ids))
    assert not set(ids) & {r.id for r in ev.load_gold(DEV_GOLD)}


def test_heldout_has_at_least_40_reports(heldout):
    assert len(heldout) >= 40


def test_heldout_has_at_least_a_quarter_normal_reports(heldout):
    normal = sum(_is_normal(r) for r in heldout)
    assert normal / len(heldout) >= 0.25
    assert normal < len(heldout)  # and abnormal ones too


def test_heldout_has_a_lesion_in_every_organ_key(heldout):
    with_lesion = {organ for r in heldout for organ, f in r.organs.items() if "lesion" in _states(f)}
    assert with_lesion == set(ORGANS)


def test_heldout_shares_no_report_text_with_dev(heldout):
    dev = ev.load_gold(DEV_GOLD)
    dev_reports = {" ".join(r.report.lower().split()) for r in dev}
    dev_sentences = set().union(*(_sentences(r.report) for r in dev))
    for report in heldout:
        assert " ".join(report.report.lower().split()) not in dev_reports, report.id
        shared = _sentences(report.report) & dev_sentences
        assert not shared, (report.id, sorted(shared))
