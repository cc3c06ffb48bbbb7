import csv

import numpy as np
import pytest

from extract.store import Store
from schemas.tables import audit_table
from train.data.labels import load_label_names
from train.data.records import records_from_ground_truth
from train.evaluate import read_mapping
from train.review.config import AuditConfig
from train.review.files import PredictionError, audit_predictions, read_prediction, write_audit_csv
from train.review.synthetic import inject_error


def _audit(cases, pred, records):
    mapping = read_mapping(cases / "case_reports.csv")
    return audit_predictions(pred, lambda ct: records.get(mapping.get(ct)), AuditConfig(), cases_root=cases,
                             organ_names=load_label_names(cases / "labels.json"))


def test_a_perfect_model_agrees_with_every_true_report(reviewed):
    cases, pred = reviewed
    results, skipped = _audit(cases, pred, records_from_ground_truth(cases / "ground_truth.jsonl"))
    assert skipped == [] and len(results) == 6
    assert [r.audit.score for r in results] == [0.0] * 6
    with_tumours = [r for r in results if r.audit.n_reported]
    assert with_tumours and all(r.audit.n_predicted == r.audit.n_reported for r in with_tumours)
    # sub-segments come from the case's own organ mask, and agree with the report's
    assert all(p.segment is not None for r in with_tumours for p in r.lesions if p.organ in ("liver", "pancreas"))


def test_injected_errors_rank_first_with_their_reasons(reviewed):
    cases, pred = reviewed
    truth = records_from_ground_truth(cases / "ground_truth.jsonl")
    mapping = read_mapping(cases / "case_reports.csv")
    sized = next(ct for ct, rid in sorted(mapping.items()) if any(t.diameters_mm and t.organ == "liver"
                                                                  for t in truth[rid].tumors))
    normal = next(ct for ct, rid in sorted(mapping.items()) if ct != sized and "pancreas" in truth[rid].lesion_free)
    bad = dict(truth)
    rng = np.random.default_rng(0)
    bad[mapping[sized]] = inject_error(truth[mapping[sized]], "size_x10", rng, organs=("liver",))
    bad[mapping[normal]] = inject_error(truth[mapping[normal]], "normal_called_abnormal", rng, organs=("pancreas",))
    results, _ = _audit(cases, pred, bad)
    top = {r.audit.ct_id: [x.value for x in r.audit.reasons] for r in results[:2]}
    assert top == {sized: ["likely_unit_error"], normal: ["reported_not_found", "count_mismatch"]}
    assert [r.audit.score for r in results[2:]] == [0.0] * 4
    assert results[0].audit.ct_id == sized  # 2.0 for the unit error beats 1.0 for the missed 20 mm tumour


def test_worker_processes_give_the_same_audit(reviewed):
    cases, pred = reviewed
    truth = records_from_ground_truth(cases / "ground_truth.jsonl")
    mapping = read_mapping(cases / "case_reports.csv")
    bad = {rid: inject_error(r, "size_x10", np.random.default_rng(3)) or r for rid, r in truth.items()}
    args = (pred, lambda ct: bad.get(mapping.get(ct)), AuditConfig())
    kw = dict(cases_root=cases, organ_names=load_label_names(cases / "labels.json"))
    one, _ = audit_predictions(*args, **kw)
    two, _ = audit_predictions(*args, **kw, workers=2)
    assert any(r.audit.score > 0 for r in one)
    assert [r.audit for r in two] == [r.audit for r in one] and [r.lesions for r in two] == [r.lesions for r in one]
    assert two[0].prediction.lesion_map.shape == two[0].prediction.shape  # read again after the trip back


def test_the_audit_table_and_csv_are_idempotent(reviewed, tmp_path):
    cases, pred = reviewed
    results, _ = _audit(cases, pred, records_from_ground_truth(cases / "ground_truth.jsonl"))
    rows = [r.audit for r in results]
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        store.write_audit(audit_table([rows[0].model_copy(update={"score": 9.0})]))
        store.write_audit(audit_table(rows))
        store.write_audit(audit_table(rows))  # again: the same rows, not twice as many
        got = store.query("SELECT ct_id, score, reasons FROM audit ORDER BY ct_id").to_pylist()
    assert [g["ct_id"] for g in got] == sorted(r.ct_id for r in rows) and {g["score"] for g in got} == {0.0}
    path = write_audit_csv(rows, tmp_path / "audit.csv")
    with path.open() as fh:
        table = list(csv.DictReader(fh))
    assert [t["ct_id"] for t in table] == [r.ct_id for r in rows] and table[0]["predictions"] == str(pred)


def test_a_broken_prediction_names_its_file(reviewed, tmp_path):
    _, pred = reviewed
    bad = tmp_path / "c1"
    bad.mkdir()
    for name in ("summary.json", "labels.json"):
        (bad / name).write_bytes((pred / sorted(p.name for p in pred.iterdir())[0] / name).read_bytes())
    (bad / "lesions.nii.gz").write_bytes(b"cut")
    with pytest.raises(PredictionError, match=r"c1/lesions.nii.gz: cannot read the NIfTI file"):
        read_prediction(bad)
    (bad / "labels.json").write_text("{}")
    with pytest.raises(PredictionError, match=r"c1/labels.json: no `lesions` / `channels`"):
        read_prediction(bad)


def test_the_one_shot_gzip_reader_matches_nibabel_and_leaves_scaled_files_to_it(tmp_path):
    import nibabel as nib

    from train.review.files import _read_nifti, _read_nifti_gz

    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 50
    affine = np.array([[-0.8, 0, 0, 10], [0, -0.8, 0, 20], [0, 0, 2.5, -30], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "a.nii.gz")
    got, got_affine = _read_nifti_gz(tmp_path / "a.nii.gz")
    assert got.dtype == np.int16 and np.array_equal(got, data)
    assert np.array_equal(got_affine, nib.load(tmp_path / "a.nii.gz").affine)  # the header's float32 affine
    scaled = nib.Nifti1Image(data, affine)
    scaled.header.set_slope_inter(2.0, 1.0)
    nib.save(scaled, tmp_path / "s.nii.gz")
    assert _read_nifti_gz(tmp_path / "s.nii.gz") is None
    assert np.array_equal(_read_nifti(tmp_path / "s.nii.gz"), np.asarray(nib.load(tmp_path / "s.nii.gz").dataobj))
    (tmp_path / "cut.nii.gz").write_bytes((tmp_path / "a.nii.gz").read_bytes()[:40])
    assert _read_nifti_gz(tmp_path / "cut.nii.gz") is None


def test_a_ct_without_predicted_lesions_still_checks_the_reported_sizes_against_its_organs(reviewed, tmp_path):
    import dataclasses

    import nibabel as nib

    from tests.train.review.conftest import CLASSES
    from train.data.records import CaseRecords, ReportedTumor
    from train.review.synthetic import write_truth_prediction

    cases, _ = reviewed
    case_dir = sorted((cases / "cases").iterdir())[0]
    organ_names, lesion_names = load_label_names(cases / "labels.json"), load_label_names(cases / "lesion_labels.json")
    empty = np.zeros(nib.load(str(case_dir / "lesions.nii.gz")).shape, np.uint8)
    write_truth_prediction(case_dir, tmp_path / "pred" / case_dir.name, CLASSES, organ_names, lesion_names,
                           lesions=empty)
    spacing = min(nib.load(str(case_dir / "ct.nii.gz")).header.get_zooms()[:3])
    reported = CaseRecords("R", (ReportedTumor("liver", ("liver_segment_7",), None, (900.0,)),
                                 ReportedTumor("kidney", (), "left", (float(spacing) / 2,)),
                                 ReportedTumor("pancreas", (), None, (20.0,))), frozenset(), frozenset())
    results, _ = audit_predictions(tmp_path / "pred", lambda ct: reported, AuditConfig(), cases_root=cases,
                                   organ_names=organ_names)
    lines = sorted(f.text for f in results[0].findings if f.reason.value == "likely_unit_error")
    assert len(lines) == 2 and results[0].audit.n_predicted == 0
    assert lines[0].startswith("kidney (left): reported") and lines[0].endswith(f"voxel {spacing:.1f} mm")
    assert lines[1].startswith("liver (liver_segment_7): reported 900.0 mm") and " organ " in lines[1]
    plausible = dataclasses.replace(reported, tumors=reported.tumors[2:])
    results, _ = audit_predictions(tmp_path / "pred", lambda ct: plausible, AuditConfig(), cases_root=cases,
                                   organ_names=organ_names)
    assert [x.value for x in results[0].audit.reasons] == ["reported_not_found", "count_mismatch"]
