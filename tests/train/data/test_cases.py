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
