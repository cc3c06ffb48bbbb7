import json
import shutil

import numpy as np
import pytest

from train.data.cases import build_cases, join_records, read_mapping


@pytest.fixture()
def dataset(phantom_set, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(phantom_set, root, ignore=shutil.ignore_patterns("cache"))
    return root


def test_join_lists_unmatched_reports_and_cts(dataset):
    ids = sorted(p.name for p in (dataset / "cases").iterdir())
    # The first CT has no report row; an extra report row has no CT.
    rows = ["ct_id,report_id"] + [f"{c},R{c}" for c in ids[1:]] + ["CT_MISSING,R_ORPHAN"]
    (dataset / "map.csv").write_text("\n".join(rows) + "\n")
    result = build_cases(dataset, dataset / "map.csv")
    assert result.table.num_rows == len(ids) and not result.problems
    assert result.cts_without_report == [ids[0]] and result.reports_without_ct == ["R_ORPHAN"]
    row = result.table.to_pylist()[1]
    assert row["report_id"] == f"R{ids[1]}" and len(row["spacing"]) == 3 and len(row["content_sha256"]) == 64
    assert row["split"] in {"train", "val"}
    # Records: reports with records but no CT, and CTs without records, are listed.
    join = join_records(result.table, {f"R{ids[1]}", "R_NOT_A_CASE"})
    assert join.matched == {ids[1]: f"R{ids[1]}"} and join.records_without_ct == ["R_NOT_A_CASE"]
    assert ids[0] in join.cts_without_records and len(join.cts_without_records) == len(ids) - 1


def test_bad_case_is_reported_not_fatal(dataset):
    import nibabel as nib

    ids = sorted(p.name for p in (dataset / "cases").iterdir())
    bad = dataset / "cases" / ids[2] / "organs.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4)), bad)
    (dataset / "cases" / ids[3] / "ct.nii.gz").write_bytes(b"not a nifti")
    result = build_cases(dataset, dataset / "case_reports.csv")
    fields = {(p.ct_id, p.field) for p in result.problems}
    assert (ids[2], "organ_mask_path") in fields and (ids[3], "image_path") in fields
    assert result.table.num_rows == len(ids) - 2


def test_unnamed_label_value_is_a_problem(dataset):
    import nibabel as nib

    ids = sorted(p.name for p in (dataset / "cases").iterdir())
    path = dataset / "cases" / ids[0] / "organs.nii.gz"
    img = nib.load(path)
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 77
    nib.save(nib.Nifti1Image(data, img.affine), path)
    result = build_cases(dataset, None)
    assert any(p.ct_id == ids[0] and "77" in p.message for p in result.problems)


def test_mapping_errors_name_file_and_row(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("ct_id,report_id\nA,1\nA,2\n,3\n")
    mapping, _, problems = read_mapping(p)
    assert mapping == {"A": "1"} and [m.message.split(": ")[0] for m in problems] == [f"{p}, row 3", f"{p}, row 4"]
    (tmp_path / "n.csv").write_text("ct,report\n")
    with pytest.raises(ValueError, match="n.csv.*missing column"):
        read_mapping(tmp_path / "n.csv")


def test_read_cases_gives_back_the_table_rsuper_cases_stored(dataset, tmp_path):
    from extract.store import Store

    from train.data.cases import CASES_SCHEMA, read_cases

    table = build_cases(dataset, dataset / "case_reports.csv").table
    with Store(tmp_path / "rsuper.duckdb") as store:
        store.replace_cases(table)
    with Store(tmp_path / "rsuper.duckdb", read_only=True) as store:
        stored = read_cases(store)
    assert stored.schema == CASES_SCHEMA
    assert stored.to_pylist() == sorted(table.to_pylist(), key=lambda r: r["ct_id"])


def _nifti(array, path, affine=None):
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, np.diag([1.5, 1.5, 2.0, 1.0]) if affine is None else affine), path)


def _nnunet_v2(root, channel_names=None, file_ending=".nii.gz"):
    """An nnU-Net v2 raw dataset: dataset.json (labels name -> int), imagesTr/<id>_<XXXX>, labelsTr/<id>."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    channels = channel_names or {"0": "CT"}
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": channels, "file_ending": file_ending, "numTraining": 2,
        "labels": {"background": 0, "liver": 1, "liver_tumor": 2, "right kidney": 3, "aorta": 4}}))
    for ct_id in ("liver_001", "liver_002"):
        for channel in channels:
            image = np.full((12, 10, 8), -50 if channels[channel] == "CT" else 7, np.int16)
            _nifti(image, root / "imagesTr" / f"{ct_id}_{int(channel):04d}{file_ending}")
        label = np.zeros((12, 10, 8), np.uint8)
        label[0:6, 0:6, 0:4] = 1
        label[1:3, 1:3, 1:3] = 2  # the tumour has its own value, inside the liver
        label[8:11, 6:9, 0:3] = 3
        label[6, 9, :] = 4
        _nifti(label, root / "labelsTr" / f"{ct_id}{file_ending}")
    (root / "imagesTr" / "._liver_001_0000.nii.gz").write_bytes(b"AppleDouble junk")


def test_nnunet_v2_raw_dataset(tmp_path):
    from train.data.cache import PreprocessConfig, preprocess_case
    from train.data.cases import training_cases
    from train.data.labels import CANONICAL_INDEX, lesion_code, load_label_names

    root = tmp_path / "Dataset003_Liver"
    _nnunet_v2(root)
    result = build_cases(root, None)
    assert result.table.column("ct_id").to_pylist() == ["liver_001", "liver_002"] and not result.problems
    assert result.ignored_labels == ["aorta"]
    row = result.table.to_pylist()[0]
    assert row["image_path"].endswith("imagesTr/liver_001_0000.nii.gz") and row["spacing"] == [1.5, 1.5, 2.0]
    assert row["organ_mask_path"] == row["lesion_mask_path"]  # lesions live in the same label map
    names = load_label_names(root / "dataset.json")
    (case,) = training_cases(result.table.slice(0, 1), {}, names, None, split=None)
    arrays, meta = preprocess_case(case.files, PreprocessConfig())
    labels, lesions = arrays["labels"], arrays["lesions"]
    assert labels[1, 1, 1] == CANONICAL_INDEX["liver"] and labels[4, 4, 2] == CANONICAL_INDEX["liver"]
    assert labels[9, 7, 1] == CANONICAL_INDEX["kidney_right"] and labels[6, 9, 0] == 0
    assert lesions[1, 1, 1] == lesion_code("liver") and np.count_nonzero(lesions) == 8
    assert meta["available_labels"] == ["kidney_right", "liver"]


def test_nnunet_v2_channel_and_file_ending(tmp_path):
    root = tmp_path / "two_channels"
    _nnunet_v2(root, channel_names={"0": "T2", "1": "CT"}, file_ending=".nii")
    result = build_cases(root, None)
    assert [r["image_path"].rsplit("/", 1)[1] for r in result.table.to_pylist()] == ["liver_001_0001.nii",
                                                                                     "liver_002_0001.nii"]
    for name, meta, match in (("mha", {"file_ending": ".mha"}, "file_ending '.mha'"),
                              ("mr", {"channel_names": {"0": "T1", "1": "T2"}}, "one channel named CT")):
        bad = tmp_path / name
        _nnunet_v2(bad)
        data = json.loads((bad / "dataset.json").read_text())
        (bad / "dataset.json").write_text(json.dumps({**data, **meta}))
        with pytest.raises(ValueError, match=f"dataset.json: .*{match}"):
            build_cases(bad, None)


def test_nnunet_v2_explicit_dataset_files(tmp_path):
    root = tmp_path / "explicit"
    _nnunet_v2(root)
    (root / "elsewhere").mkdir()
    shutil.move(root / "imagesTr" / "liver_002_0000.nii.gz", root / "elsewhere" / "scan.nii.gz")
    data = json.loads((root / "dataset.json").read_text())
    data["dataset"] = {"liver_002": {"images": ["elsewhere/scan.nii.gz"], "label": "labelsTr/liver_002.nii.gz"}}
    (root / "dataset.json").write_text(json.dumps(data))
    (row,) = build_cases(root, None).table.to_pylist()
    assert row["ct_id"] == "liver_002" and row["image_path"].endswith("elsewhere/scan.nii.gz")
    assert row["organ_mask_path"].endswith("labelsTr/liver_002.nii.gz")


def test_unknown_label_names_name_the_file(tmp_path):
    root = tmp_path / "ds"
    _nnunet_v2(root)
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "blob": 2}}))
    result = build_cases(root, None)
    (problem,) = result.problems
    assert problem.field == "labels" and problem.message.startswith(f"{root / 'dataset.json'}: unknown label names ['blob']")
    assert result.table.num_rows == 0
