"""Shared tiny phantom set (written once per session) and its training cases for the training-data tests."""

from __future__ import annotations

import pytest

from train.data.cases import build_cases, training_cases
from train.data.labels import load_label_names
from train.data.phantoms import PhantomConfig, write_phantom_set
from train.data.records import records_from_ground_truth


@pytest.fixture(scope="session")
def phantom_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    # Every case has at least one tumour so report groups exist.
    write_phantom_set(out, PhantomConfig(n=5, seed=21, shape=(56, 56, 40), tumor_count_probabilities=(0, 0.5, 0.3, 0.2),
                                         small_lesion_probability=0.0))
    return out


@pytest.fixture(scope="module")
def cases(phantom_set):
    """The phantom set's training cases, some with masks and some report-only."""
    table = build_cases(phantom_set, phantom_set / "case_reports.csv").table
    rec = records_from_ground_truth(phantom_set / "ground_truth.jsonl")
    out = training_cases(table, rec, load_label_names(phantom_set / "labels.json"),
                         load_label_names(phantom_set / "lesion_labels.json"), split=None, report_only_fraction=0.6,
                         seed=1)
    assert any(c.has_mask for c in out) and any(not c.has_mask for c in out)
    return out
