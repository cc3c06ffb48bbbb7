"""A tiny phantom set with predictions of a perfect model (its true masks), shared by the review tests."""

from __future__ import annotations

import pytest

from train.data.labels import load_label_names
from train.data.phantoms import PhantomConfig, write_phantom_set
from train.review.synthetic import write_truth_prediction

CLASSES = ["liver", "pancreas", "kidney", "spleen", "liver_lesion", "pancreas_lesion", "kidney_lesion"]


@pytest.fixture(scope="session")
def reviewed(tmp_path_factory):
    """(phantom root, predictions folder): six phantoms, every tumour measured, predicted exactly."""
    root = tmp_path_factory.mktemp("review")
    cases = root / "phantoms"
    write_phantom_set(cases, PhantomConfig(n=6, seed=21, shape=(64, 64, 48), tumor_count_probabilities=(0.2, 0.4, 0.4),
                                           small_lesion_probability=0.0))
    organ_names, lesion_names = load_label_names(cases / "labels.json"), load_label_names(cases / "lesion_labels.json")
    for case_dir in sorted((cases / "cases").iterdir()):
        write_truth_prediction(case_dir, root / "pred" / case_dir.name, CLASSES, organ_names, lesion_names)
    return cases, root / "pred"


@pytest.fixture(scope="session")
def pages(reviewed, tmp_path_factory):
    """The case pages of the reviewed set after an audit whose reports carry two injected errors:
    (pages folder, results, the two CTs with errors)."""
    import numpy as np

    from train.data.records import records_from_ground_truth
    from train.evaluate import read_mapping
    from train.review.config import AuditConfig
    from train.review.files import audit_predictions, page_arrays
    from train.review.pages import write_pages
    from train.review.synthetic import inject_error

    cases, pred = reviewed
    organ_names = load_label_names(cases / "labels.json")
    records = records_from_ground_truth(cases / "ground_truth.jsonl")
    mapping = read_mapping(cases / "case_reports.csv")
    rng = np.random.default_rng(0)
    sized = next(ct for ct, rid in sorted(mapping.items()) if any(t.diameters_mm for t in records[rid].tumors))
    free = next(ct for ct, rid in sorted(mapping.items()) if ct != sized and "kidney" in records[rid].lesion_free)
    records[mapping[sized]] = inject_error(records[mapping[sized]], "size_x10", rng)
    records[mapping[free]] = inject_error(records[mapping[free]], "normal_called_abnormal", rng, organs=("kidney",))
    results, _ = audit_predictions(pred, lambda ct: records.get(mapping.get(ct)), AuditConfig(), cases_root=cases,
                                   organ_names=organ_names)
    out = tmp_path_factory.mktemp("pages")
    write_pages(results, out, arrays_of=lambda r: page_arrays(r, organ_names))
    return out, results, (sized, free)
