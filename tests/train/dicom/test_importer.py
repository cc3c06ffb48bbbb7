import json
import multiprocessing
import os
import shutil
import signal
import time

import nibabel as nib
import numpy as np
from pydicom.data import get_testdata_file

from extract.store import Store
from train.data.cases import build_cases
from train.dicom import importer
from train.dicom.config import DicomImportConfig, SeriesRule
from train.dicom.importer import ct_id_for, import_dicom, stored_report_ids
from train.dicom.synthetic import uid

from .conftest import CORRUPT, N_STUDIES, TILTED, one_series, study_tags

CONFIG = DicomImportConfig(series=SeriesRule(min_slices=10), scan_workers=1)


def _by_status(result):
    out = {}
    for s in result.studies:
        out.setdefault(s.status, []).append(s)
    return out


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_twenty_studies_eighteen_cases_joined_two_broken_listed(tmp_path, export, store_with_reports):
    root, cases = export
    out = tmp_path / "out"
    report_ids = stored_report_ids(store_with_reports)
    result = import_dicom(root, out, CONFIG, report_ids)
    status = _by_status(result)
    assert len(status["imported"]) == 18 and len(status["failed"]) == 2
    failed = {s.study_uid: s for s in status["failed"]}
    corrupt, tilted = failed[study_tags(CORRUPT).study_uid], failed[study_tags(TILTED).study_uid]
    assert corrupt.reason.startswith("PixelData: cannot decode") and corrupt.accession == cases[CORRUPT].report_id
    victim = uid(uid(study_tags(CORRUPT).study_uid, 3), 10)  # slice 10 of its portal-venous series
    assert corrupt.path == str(root / "flat" / victim)
    assert tilted.reason.startswith("no usable series: series 1 'Scout': ImageType ORIGINAL/PRIMARY/LOCALIZER")
    assert "series 3 'Portal venous': gantry tilt 12.0°" in tilted.reason
    assert tilted.path == str(root / "flat" / uid(uid(study_tags(TILTED).study_uid, 3), 0))  # its largest series
    # Every good study joined to its own report; the two reports without a study are listed.
    table = result.cases.table.to_pylist()
    assert len(table) == 18 and not result.cases.problems
    good = [i for i in range(N_STUDIES) if i not in (CORRUPT, TILTED)]
    assert {r["ct_id"]: r["report_id"] for r in table} == {
        ct_id_for(study_tags(i).study_uid): cases[i].report_id for i in good}
    assert result.reports_without_ct == sorted(["ACC_NO_STUDY_1", "ACC_NO_STUDY_2", cases[CORRUPT].report_id,
                                                cases[TILTED].report_id])
    assert not result.unmatched_studies
    # Nothing of the broken studies was written; no temporary file anywhere.
    written = _files(out)
    assert not any(ct_id_for(study_tags(i).study_uid) in f for f in written for i in (CORRUPT, TILTED))
    assert not [f for f in written if ".tmp" in f]
    # The image is the phantom: same voxels, same affine.
    row = next(r for r in table if r["ct_id"] == ct_id_for(study_tags(0).study_uid))
    img = nib.load(row["image_path"])
    np.testing.assert_array_equal(np.asarray(img.dataobj), cases[0].ct)
    assert np.abs(img.affine - cases[0].affine).max() < 1e-3
    assert row["organ_mask_path"] is None and row["shape"] == [32, 32, 24]
    # The record says what was chosen and why, and what was skipped and why.
    record = json.loads((out / "cases" / row["ct_id"] / "dicom.json").read_text())
    assert record["join_values"] == {"AccessionNumber": cases[0].report_id}
    assert record["chosen_series"]["description"] == "Portal venous"
    assert record["chosen_series"]["why"].startswith("portal-venous keyword 'portal'")
    assert {s["description"]: s["reason"] for s in record["series"] if s["verdict"] == "skipped"} == {
        "Scout": "ImageType ORIGINAL/PRIMARY/LOCALIZER: ['LOCALIZER'] is skipped (a scout)",
        "Arterial": "slice thickness 6 mm, over max_slice_thickness_mm 5"}
    manifest = json.loads((out / "dicom_import.json").read_text())
    assert manifest["files"] == N_STUDIES * 37 + 2 and len(manifest["studies"]) == N_STUDIES
    assert (out / "case_reports.csv").read_text().count("\n") == 19
    # The store: 18 cases, reports untouched.
    with Store(store_with_reports) as store:
        before = store.query("SELECT count(*) AS n FROM reports").column(0)[0].as_py()
        store.replace_cases(result.cases.table)
        assert store.query("SELECT count(*) FROM cases").column(0)[0].as_py() == 18
        assert store.query("SELECT count(*) FROM reports").column(0)[0].as_py() == before == 22
    # `rsuper cases OUT` over the same folder finds the same join through the machine-made map.
    (out / "labels.json").write_text('{"0": "background", "1": "liver"}')
    again = build_cases(out, out / "case_reports.csv")
    assert {r["ct_id"]: r["report_id"] for r in again.table.to_pylist()} == {r["ct_id"]: r["report_id"] for r in table}
    assert {r["ct_id"]: r["content_sha256"] for r in again.table.to_pylist()} == {
        r["ct_id"]: r["content_sha256"] for r in table}


def _import_and_hang(root, out, hang_at: int) -> None:
    """Child process: import, but stop dead inside the write of image number ``hang_at`` (half a temporary file)."""
    real_write, calls = importer.write_nifti, []

    def hang_on_one(volume, path):
        calls.append(path)
        if len(calls) == hang_at:
            path.with_name(path.name + ".tmp.nii.gz").write_bytes(b"\x1f\x8b half an image")
            (out / "hanging").touch()  # tells the test to kill now (real writes make .tmp files too)
            time.sleep(600)  # until SIGKILL
        real_write(volume, path)

    importer.write_nifti = hang_on_one
    import_dicom(root, out, CONFIG, set())


def test_resume_after_sigkill_redoes_only_unfinished_studies(tmp_path, export):
    root, _ = export
    out = tmp_path / "out"
    child = multiprocessing.get_context("fork").Process(target=_import_and_hang, args=(root, out, 5))
    child.start()
    deadline = time.monotonic() + 120
    while not (out / "hanging").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL
    finished = sorted(p.parent.name for p in out.glob("cases/*/dicom.json"))
    (half,) = out.glob("cases/*/ct.nii.gz.tmp.nii.gz")
    assert len(finished) == 4 and not (half.parent / "ct.nii.gz").exists()
    result = import_dicom(root, out, CONFIG, set())
    status = _by_status(result)
    assert sorted(s.ct_id for s in status["resumed"]) == finished
    assert len(status["imported"]) == 14 and len(status["failed"]) == 2
    assert not list(out.rglob("*.tmp*"))  # the half-written file was replaced by the finished image
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("cases/*/ct.nii.gz")}
    (out / "cases" / finished[0] / "dicom.json").unlink()  # killed after the image, before the record
    third = _by_status(import_dicom(root, out, CONFIG, set()))
    assert [s.ct_id for s in third["imported"]] == [finished[0]] and len(third["resumed"]) == 17
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items() if finished[0] not in str(p))
    assert len(result.unmatched_studies) == 18  # no store given: nothing joined, every study listed


def test_duplicate_accession_numbers_fail_both_studies(tmp_path):
    for i, accession in ((0, "ACC_SAME"), (1, "ACC_SAME"), (2, "ACC_OTHER")):
        one_series(tmp_path / "pacs" / str(i), study=study_tags(i, accession))
    result = import_dicom(tmp_path / "pacs", tmp_path / "out", CONFIG, {"ACC_SAME", "ACC_OTHER"})
    status = _by_status(result)
    assert [s.report_id for s in status["imported"]] == ["ACC_OTHER"]
    assert sorted(s.reason.split(": also")[0] for s in status["failed"]) == ["duplicate AccessionNumber 'ACC_SAME'"] * 2
    assert result.cases.table.num_rows == 1
    # A later export whose study repeats an accession number already imported into OUT.
    one_series(tmp_path / "later", study=study_tags(9, "ACC_OTHER"))
    later = import_dicom(tmp_path / "later", tmp_path / "out", CONFIG, {"ACC_SAME", "ACC_OTHER"})
    assert [s.reason for s in later.studies] == [f"duplicate AccessionNumber 'ACC_OTHER': also study "
                                                 f"{study_tags(2).study_uid}"]


def test_fallback_join_key_and_require_report(tmp_path):
    one_series(tmp_path / "pacs" / "a", study=study_tags(0, "", patient_id="P1", study_date="20250105"))
    one_series(tmp_path / "pacs" / "b", study=study_tags(1, "ACC_UNKNOWN"))
    config = CONFIG.model_copy(update={"join_keys": ("AccessionNumber", "PatientID+StudyDate"),
                                       "require_report": True})
    result = import_dicom(tmp_path / "pacs", tmp_path / "out", config, {"P1_20250105"})
    status = _by_status(result)
    assert [s.report_id for s in status["imported"]] == ["P1_20250105"]
    assert [s.accession for s in status["no report"]] == ["ACC_UNKNOWN"]
    assert result.cases.table.column("report_id").to_pylist() == ["P1_20250105"]


def test_join_keys_changed_later_apply_to_converted_studies(tmp_path):
    one_series(tmp_path / "pacs", study=study_tags(0, "", patient_id="P1", study_date="20250105"))
    first = import_dicom(tmp_path / "pacs", tmp_path / "out", CONFIG, {"P1_20250105"})
    assert first.cases.table.column("report_id").to_pylist() == [None]
    config = CONFIG.model_copy(update={"join_keys": ("AccessionNumber", "PatientID+StudyDate")})
    again = import_dicom(tmp_path / "pacs", tmp_path / "out", config, {"P1_20250105"})
    assert [s.status for s in again.studies] == ["resumed"]
    assert again.cases.table.column("report_id").to_pylist() == ["P1_20250105"]


def test_non_ct_and_missing_slice_from_real_files(tmp_path):
    (tmp_path / "pacs").mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "pacs" / "mr")
    _, _, files = one_series(tmp_path / "pacs" / "ct", study=study_tags(4))
    files[7].unlink()
    result = import_dicom(tmp_path / "pacs", tmp_path / "out", CONFIG, set())
    reasons = {s.path: s.reason for s in result.failed}
    assert reasons[str(files[6])] == "no usable series: series 3 'Portal venous': 1 missing slice(s): a gap of " \
                                     f"6.00 mm between files {files[6].name} and {files[8].name} (slice step 3.00 mm)"
    assert reasons[str(tmp_path / "pacs" / "mr")] == "no usable series: series 1: modality MR, not CT"
    assert result.cases.table.num_rows == 0


def test_dry_run_writes_nothing(tmp_path, export):
    root, _ = export
    result = import_dicom(root, tmp_path / "out", CONFIG, set(), dry_run=True)
    # Only the pixels show the corrupt study's problem: a dry run reads headers alone.
    status = _by_status(result)
    assert len(status["to import"]) == 19 and [s.study_uid for s in status["failed"]] == [study_tags(TILTED).study_uid]
    assert result.cases is None
    assert not (tmp_path / "out").exists()


def test_masks_made_later_are_picked_up(tmp_path):
    hu, affine, _ = one_series(tmp_path / "pacs", study=study_tags(0))
    out = tmp_path / "out"
    first = import_dicom(tmp_path / "pacs", out, CONFIG, {study_tags(0).accession}).cases.table.to_pylist()
    assert first[0]["organ_mask_path"] is None
    # What `rsuper organs` leaves: a label map beside the CT and the label-name file at the root.
    case_dir = out / "cases" / first[0]["ct_id"]
    nib.save(nib.Nifti1Image((hu > 50).astype(np.uint8), nib.load(case_dir / "ct.nii.gz").affine),
             case_dir / "organs.nii.gz")
    (out / "labels.json").write_text('{"0": "background", "1": "liver"}')
    again = import_dicom(tmp_path / "pacs", out, CONFIG, {study_tags(0).accession})
    assert _by_status(again)["resumed"] and again.cases.table.to_pylist()[0]["organ_mask_path"] == str(
        case_dir / "organs.nii.gz")
    assert again.cases.table.to_pylist()[0]["report_id"] == study_tags(0).accession
