"""Shared checks of the gold files (`data/gold/*.jsonl`): organ states, normal reports, reused sentences."""

import re
from pathlib import Path

GOLD_DIR = Path(__file__).resolve().parents[2] / "data" / "gold"
DEV_GOLD = GOLD_DIR / "dev_gold.jsonl"
HELDOUT_GOLD = GOLD_DIR / "heldout_gold.jsonl"
LONGFORM_GOLD = GOLD_DIR / "longform_gold.jsonl"
COUNTS_DEV_GOLD = GOLD_DIR / "counts_dev_gold.jsonl"
COUNTS_DEV2_GOLD = GOLD_DIR / "counts_dev2_gold.jsonl"
COUNTS_DEV3_GOLD = GOLD_DIR / "counts_dev3_gold.jsonl"
COUNTS_DEV4_GOLD = GOLD_DIR / "counts_dev4_gold.jsonl"
COUNTS_DEV5_GOLD = GOLD_DIR / "counts_dev5_gold.jsonl"
COUNTS_DEV6_GOLD = GOLD_DIR / "counts_dev6_gold.jsonl"
COUNTS_DEV7_GOLD = GOLD_DIR / "counts_dev7_gold.jsonl"
COUNTS_DEV8_GOLD = GOLD_DIR / "counts_dev8_gold.jsonl"
COUNTS_DEV9_GOLD = GOLD_DIR / "counts_dev9_gold.jsonl"
#: A sentence this long appearing in two sets means text was reused, not a stock phrase.
MIN_SHARED_SENTENCE_CHARS = 40


def organ_states(fields):
    """The states a gold organ accepts (one, or the `any_of` set)."""
    state = fields["state"]
    return set(state["any_of"]) if isinstance(state, dict) else {state}


def is_normal(report):
    """No organ that may be a lesion or equivocal."""
    return not any(organ_states(f) & {"lesion", "equivocal"} for f in report.organs.values())


def long_sentences(text):
    """Normalised sentences and clauses of at least `MIN_SHARED_SENTENCE_CHARS` characters."""
    parts = re.split(r"\n|(?<=[.;:])\s+", text)
    return {" ".join(p.lower().split()) for p in parts if len(p.strip()) >= MIN_SHARED_SENTENCE_CHARS}


def organs_with_a_lesion(reports):
    """Organ keys that may be a lesion in at least one report."""
    return {organ for r in reports for organ, f in r.organs.items() if "lesion" in organ_states(f)}


def assert_no_text_shared(reports, others):
    """No report of `reports` repeats a whole report or a long sentence of `others` (whitespace and case aside)."""
    other_reports = {" ".join(r.report.lower().split()) for r in others}
    other_sentences = set().union(*(long_sentences(r.report) for r in others))
    for report in reports:
        assert " ".join(report.report.lower().split()) not in other_reports, report.id
        shared = long_sentences(report.report) & other_sentences
        assert not shared, (report.id, sorted(shared))
