"""`rsuper organs`: TotalSegmentator output folders, AbdomenAtlas case folders and label maps -> our label map."""

import json
import os
import stat
import sys

import nibabel as nib
import numpy as np
import pytest

from schemas.label_aliases import TOTALSEGMENTATOR_LIVER_SEGMENTS, TOTALSEGMENTATOR_TOTAL
from train.data import totalsegmentator as TS
from train.data.cases import build_cases
from train.data.labels import CANONICAL_INDEX as C
from train.data.labels import lesion_code, read_label_file
from train.data.organs import OrganMaskError, OrgansConfig, class_files, map_class_files, map_label_map, run_organs

SHAPE = (20, 16, 12)
# 2 x 2 x 3 mm voxels, x flipped (voxel i grows towards patient left), so sides must come from world x.
AFFINE = np.array([[-2.0, 0, 0, 20], [0, 2.0, 0, -10], [0, 0, 3.0, 5], [0, 0, 0, 1]])
BOXES = {  # class -> voxel box (i0, i1, j0, j1, k0, k1); larger i = smaller world x = patient left
    "liver": (0, 6, 0, 8, 0, 6),
    "spleen": (14, 18, 0, 5, 0, 5),
    "kidney_right": (2, 5, 10, 14, 0, 4),
    "kidney_left": (14, 17, 10, 14, 0, 4),
    "kidney_cyst_left": (17, 18, 10, 12, 0, 2),
    "pancreas": (4, 16, 8, 10, 6, 8),
    "lung_upper_lobe_left": (12, 18, 0, 8, 10, 12),
    "lung_lower_lobe_left": (12, 18, 0, 8, 8, 10),
    "lung_upper_lobe_right": (0, 6, 0, 8, 10, 12),
    "vertebrae_L1": (9, 11, 14, 16, 0, 12),
    "aorta": (8, 9, 12, 13, 0, 12),
    "urinary_bladder": (8, 12, 0, 3, 0, 2),
}


def _box(box) -> np.ndarray:
    m = np.zeros(SHAPE, bool)
    m[box[0]:box[1], box[2]:box[3], box[4]:box[5]] = True
    return m


def _save(array, path, affine=AFFINE):
    img = nib.Nifti1Image(np.asarray(array), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, path)


def _ct(case_dir):
    case_dir.mkdir(parents=True, exist_ok=True)
    _save(np.full(SHAPE, -100, np.int16), case_dir / "ct.nii.gz")


def write_totalsegmentator_output(out, task="total"):
    """A folder as `TotalSegmentator -o out --task TASK` leaves it: one uint8 file per class of the class map."""
    out.mkdir(parents=True, exist_ok=True)
    classes = TOTALSEGMENTATOR_TOTAL if task == "total" else TOTALSEGMENTATOR_LIVER_SEGMENTS
    for name in classes:
        mask = np.zeros(SHAPE, np.uint8)
        if task == "total" and name in BOXES:
            mask[_box(BOXES[name])] = 1
        if task == "liver_segments":
            n = int(name.rsplit("_", 1)[1])
            if n == 7:
                mask[0:3, 0:4, 0:6] = 1  # inside the liver
            if n == 2:
                mask[3:6, 0:4, 0:6] = 1  # inside the liver ...
                mask[6:8, 0:4, 0:2] = 1  # ... and spilling onto background
                mask[14:15, 0:2, 0:2] = 1  # ... and onto the spleen, which keeps its voxels
        _save(mask, out / f"{name}.nii.gz")
    return out


def test_totalsegmentator_folder_becomes_our_label_map(tmp_path):
    folder = write_totalsegmentator_output(tmp_path / "ts")
    assert len(class_files(folder)) == 117
    masks = map_class_files(class_files(folder), SHAPE, AFFINE, source=str(folder))
    lab = masks.labels
    assert lab.dtype == np.uint8 and lab.shape == SHAPE
    assert (lab[_box(BOXES["liver"])] == C["liver"]).all()
    assert (lab[_box(BOXES["spleen"])] == C["spleen"]).all()
    assert (lab[_box(BOXES["kidney_right"])] == C["kidney_right"]).all()
    assert (lab[_box(BOXES["kidney_left"])] == C["kidney_left"]).all()
    assert (lab[_box(BOXES["kidney_cyst_left"])] == C["kidney_left"]).all()  # the cyst joins its kidney
    for lobe in ("lung_upper_lobe_left", "lung_lower_lobe_left"):
        assert (lab[_box(BOXES[lobe])] == C["lung_left"]).all()
    assert (lab[_box(BOXES["lung_upper_lobe_right"])] == C["lung_right"]).all()
    assert (lab[_box(BOXES["urinary_bladder"])] == C["bladder"]).all()
    assert (lab[_box(BOXES["vertebrae_L1"])] == C["bone"]).all()
    assert (lab[_box(BOXES["aorta"])] == 0).all()  # ignored: no organ key
    # Pancreas: split into head / body / tail by geometry, head towards the patient's right (small i here).
    pancreas = lab[_box(BOXES["pancreas"])]
    assert set(np.unique(pancreas)) == {C["pancreas_head"], C["pancreas_body"], C["pancreas_tail"]}
    assert lab[4, 8, 6] == C["pancreas_head"] and lab[15, 8, 6] == C["pancreas_tail"]
    named = sum(_box(b).sum() for n, b in BOXES.items() if n not in ("aorta", "kidney_cyst_left"))
    assert np.count_nonzero(lab) == named + _box(BOXES["kidney_cyst_left"]).sum()
    assert masks.provided == sorted(["bladder", "bone", "colon", "duodenum", "esophagus", "gallbladder",
                                     "adrenal_gland_left", "adrenal_gland_right", "kidney_left", "kidney_right",
                                     "liver", "lung_left", "lung_right", "pancreas_body", "pancreas_head",
                                     "pancreas_tail", "prostate", "spleen", "stomach"])
    assert "aorta" in masks.ignored and "iliopsoas_left" in masks.ignored and len(masks.ignored) == 34
    assert masks.folded == ["kidney_cyst_left", "kidney_cyst_right"] and masks.lesions is None
    assert masks.derived == ["pancreas_head", "pancreas_body", "pancreas_tail"] and masks.overlap_voxels == 0


def _fake_totalsegmentator(tmp_path, monkeypatch):
    """A `TotalSegmentator` program on PATH that writes the class files of the asked task, and weights on disk."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "TotalSegmentator"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, pathlib\n"
        f"sys.path.insert(0, {str(os.getcwd())!r})\n"
        f"sys.path.insert(0, {str(os.path.dirname(__file__))!r})\n"
        "from test_organs import write_totalsegmentator_output\n"
        "args = dict(zip(sys.argv[1::2], sys.argv[2::2]))\n"
        "write_totalsegmentator_output(pathlib.Path(args['-o']), args['--task'])\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    weights = tmp_path / "weights"
    for dataset in (291, 292, 293, 294, 295, 570):
        (weights / f"Dataset{dataset}_x").mkdir(parents=True)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(weights))


def test_rsuper_organs_runs_totalsegmentator_and_cases_reads_the_result(tmp_path, monkeypatch):
    _fake_totalsegmentator(tmp_path, monkeypatch)
    root = tmp_path / "root"
    for case in ("ct_a", "ct_b"):
        _ct(root / case)
    run = run_organs(root, OrgansConfig(liver_segments=True, device="cpu"))
    assert run.written == ["ct_a", "ct_b"] and not run.problems and "aorta" in run.ignored
    assert sorted((root / "ct_a" / "totalsegmentator").iterdir())[0].name.endswith(".nii.gz")
    assert len(list((root / "ct_a" / "totalsegmentator_liver_segments").iterdir())) == 8
    lab = np.asarray(nib.load(root / "ct_a" / "organs.nii.gz").dataobj)
    assert np.allclose(nib.load(root / "ct_a" / "organs.nii.gz").affine, AFFINE)
    assert (lab[0:3, 0:4, 0:6] == C["liver_segment_7"]).all() and (lab[3:6, 0:4, 0:6] == C["liver_segment_2"]).all()
    assert (lab[6:8, 0:4, 0:2] == C["liver_segment_2"]).all()  # a segment may take background
    assert lab[14, 0, 0] == C["spleen"]  # but not another organ
    assert (lab[0:6, 4:8, 0:6] == C["liver"]).all()  # liver outside every segment stays liver
    names = json.loads((root / "labels.json").read_text())
    assert names[str(C["liver_segment_7"])] == "liver_segment_7" and names["0"] == "background"
    assert "lesion_labels.json" not in os.listdir(root)
    summary = json.loads((root / "ct_a" / "organs.json").read_text())
    assert summary["overlap_voxels"] == 4 and summary["mapped"]["urinary_bladder"] == "bladder"
    # `rsuper cases` takes the folder as it is: every value named, nothing unknown.
    built = build_cases(root, None)
    assert built.table.num_rows == 2 and not [p for p in built.problems if p.field != "organ_mask_path"]
    # A rerun skips finished cases, and maps finished TotalSegmentator folders without the program.
    monkeypatch.setenv("PATH", "")
    (root / "ct_b" / "organs.nii.gz").unlink()
    again = run_organs(root, OrgansConfig(liver_segments=True))
    assert again.skipped == ["ct_a"] and again.written == ["ct_b"] and not again.problems


def test_without_totalsegmentator_one_line_says_how(tmp_path, monkeypatch):
    _ct(tmp_path / "root" / "ct_a")
    with pytest.raises(TS.TotalSegmentatorError, match=r"pip install TotalSegmentator.*--source segmentations"):
        run_organs(tmp_path / "root", OrgansConfig(executable="no-such-totalsegmentator"))
    _fake_totalsegmentator(tmp_path, monkeypatch)
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path / "empty"))
    with pytest.raises(TS.TotalSegmentatorError, match="totalseg_download_weights -t total"):
        run_organs(tmp_path / "root", OrgansConfig())


def _abdomenatlas_case(case_dir, with_head=True):
    """AbdomenAtlas / PanTS layout: ct.nii.gz + segmentations/<class>.nii.gz, parts stored as scaled floats."""
    _ct(case_dir)
    seg = case_dir / "segmentations"
    seg.mkdir()
    pancreas = _box((4, 16, 8, 10, 6, 8))
    parts = {"pancreas_head": (4, 8, 8, 10, 6, 8), "pancreas_body": (8, 12, 8, 10, 6, 8),
             "pancreas_tail": (12, 16, 8, 10, 6, 8)}
    files = {"liver": _box(BOXES["liver"]), "gall_bladder": _box((6, 8, 6, 8, 0, 2)), "pancreas": pancreas,
             "kidney_left": _box(BOXES["kidney_left"]), "kidney_right": _box(BOXES["kidney_right"]),
             "aorta": _box(BOXES["aorta"]), "postcava": _box((7, 8, 12, 13, 0, 12)),
             "pancreatic_lesion": _box((16, 18, 8, 10, 6, 8)), "liver_tumor": np.zeros(SHAPE, bool),
             **{name: _box(b) for name, b in parts.items() if with_head or name != "pancreas_head"}}
    for name, mask in files.items():
        # PanTS stores masks as int8 with a scale factor: they load as 1.0000000591, not 1.
        img = nib.Nifti1Image(mask.astype(np.int8), AFFINE)
        img.header.set_slope_inter(1.0000000591, 0.0)
        nib.save(img, seg / f"{name}.nii.gz")
    (seg / "._liver.nii.gz").write_bytes(b"\0\5\26\7AppleDouble")  # macOS archive junk


def test_abdomenatlas_case_folders_with_lesion_mask(tmp_path):
    root = tmp_path / "atlas"
    _abdomenatlas_case(root / "BDMAP_00000001")
    _abdomenatlas_case(root / "BDMAP_00000002", with_head=False)
    run = run_organs(root, OrgansConfig(lesion_mask=True))
    assert run.written == ["BDMAP_00000001"] and run.ignored == {"aorta", "postcava"}
    assert run.problems[0][0] == "BDMAP_00000002" and "same classes" in run.problems[0][1]
    case = root / "BDMAP_00000001"
    lab = np.asarray(nib.load(case / "organs.nii.gz").dataobj)
    assert (lab[4:8, 8:10, 6:8] == C["pancreas_head"]).all() and (lab[12:16, 8:10, 6:8] == C["pancreas_tail"]).all()
    assert (lab[16:18, 8:10, 6:8] == C["pancreas"]).all()  # the lesion outside the pancreas file joins the pancreas
    assert (lab[6:8, 6:8, 0:2] == C["gallbladder"]).all() and (lab[8, 12, :] == 0).all()
    les = np.asarray(nib.load(case / "lesions.nii.gz").dataobj)
    assert (les[16:18, 8:10, 6:8] == lesion_code("pancreas")).all() and np.count_nonzero(les) == 8
    assert json.loads((root / "lesion_labels.json").read_text()) == {
        "0": "background", str(lesion_code("liver")): "liver_lesion", str(lesion_code("pancreas")): "pancreas_lesion"}
    assert not (root / "BDMAP_00000002" / "organs.nii.gz").exists()
    built = build_cases(root, None)
    rows = built.table.to_pylist()
    assert rows[0]["lesion_mask_path"].endswith("lesions.nii.gz") and rows[1]["organ_mask_path"] is None
    (problem,) = built.problems
    assert problem.ct_id == "BDMAP_00000002" and "run `rsuper organs` first" in problem.message


def test_unknown_class_files_name_the_folder_and_the_names(tmp_path):
    case = tmp_path / "root" / "c1"
    _ct(case)
    (case / "segmentations").mkdir()
    for name in ("liver", "mystery_blob", "kidney_center"):
        _save(np.zeros(SHAPE, np.uint8), case / "segmentations" / f"{name}.nii.gz")
    run = run_organs(tmp_path / "root", OrgansConfig())
    (case_id, message), = run.problems
    assert case_id == "c1" and str(case / "segmentations") in message
    assert "['kidney_center', 'mystery_blob']" in message and not run.written
    _save(np.zeros((5, 5, 5), np.uint8), case / "segmentations" / "spleen.nii.gz")
    with pytest.raises(OrganMaskError, match="spleen.nii.gz: shape"):
        map_class_files({"spleen": case / "segmentations" / "spleen.nii.gz"}, SHAPE, AFFINE, source="x")


def test_one_label_map_with_names_as_written(tmp_path):
    path = tmp_path / "combined.nii.gz"
    raw = np.zeros(SHAPE, np.int16)
    raw[_box(BOXES["liver"])] = 1
    raw[1:3, 1:3, 1:3] = 2  # tumour inside the liver, its own value (MSD style)
    raw[_box(BOXES["aorta"])] = 3
    raw[_box(BOXES["kidney_left"])] = 4
    _save(raw, path)
    names_file = tmp_path / "dataset.json"
    names_file.write_text(json.dumps({"labels": {"background": 0, "Liver": 1, "liver_tumor": 2, "aorta": 3,
                                                 "left kidney": 4}}))
    names = read_label_file(names_file)
    masks = map_label_map(path, names, AFFINE, SHAPE, lesion_mask=True)
    assert (masks.labels[_box(BOXES["liver"])] == C["liver"]).all()
    assert (masks.labels[_box(BOXES["kidney_left"])] == C["kidney_left"]).all()
    assert (masks.labels[_box(BOXES["aorta"])] == 0).all() and masks.ignored == ["aorta"]
    assert np.count_nonzero(masks.lesions) == 8 and masks.lesions[1, 1, 1] == lesion_code("liver")
    assert masks.provided == ["kidney_left", "liver"]
    raw[0, 0, 0] = 9
    _save(raw, path)
    with pytest.raises(OrganMaskError, match=r"combined.nii.gz: label values \[9\] have no name"):
        map_label_map(path, names, AFFINE, SHAPE)


def test_cli_without_totalsegmentator_says_how_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from rsuper.cli import app

    _ct(tmp_path / "root" / "c1")
    result = CliRunner().invoke(app, ["organs", str(tmp_path / "root"), "--executable", "no-such-program"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("rsuper: error: TotalSegmentator is not installed: `pip install TotalSegmentator`")


def test_cli_organs_then_cases_from_a_yaml_config(tmp_path):
    from typer.testing import CliRunner

    from rsuper.cli import app

    runner = CliRunner()
    root = tmp_path / "atlas"
    _abdomenatlas_case(root / "BDMAP_00000001")
    config = tmp_path / "organs.yaml"
    config.write_text("source: segmentations\nlesion_mask: true\n")
    result = runner.invoke(app, ["organs", str(root), "--config", str(config), "--no-derive-subsegments"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1]) == {
        "written": 1, "skipped_done": 0, "problems": 0, "ignored_classes": 2}
    assert "ignored (no organ key): aorta, postcava" in result.output
    assert (root / "BDMAP_00000001" / "lesions.nii.gz").is_file()
    cases = runner.invoke(app, ["cases", str(root), "--dry-run"])
    assert cases.exit_code == 0 and json.loads(cases.output.strip().splitlines()[-1])["cases"] == 1
    (tmp_path / "nn" / "imagesTr").mkdir(parents=True)
    (tmp_path / "nn" / "dataset.json").write_text(json.dumps({"file_ending": ".png", "labels": {"background": 0}}))
    bad = runner.invoke(app, ["cases", str(tmp_path / "nn")])
    assert bad.exit_code == 2 and "dataset.json: file_ending '.png'" in bad.output


def test_msd_style_generic_tumour_is_the_files_only_organ(tmp_path):
    path = tmp_path / "liver_0.nii.gz"
    raw = np.zeros(SHAPE, np.uint8)
    raw[_box(BOXES["liver"])] = 1
    raw[0:6, 0:2, 0:2] = 2  # MSD Task03: the cancer label replaces liver voxels
    _save(raw, path)
    names_file = tmp_path / "dataset.json"
    names_file.write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": "cancer"}}))
    masks = map_label_map(path, read_label_file(names_file), AFFINE, SHAPE, lesion_mask=True)
    assert (masks.labels[_box(BOXES["liver"])] == C["liver"]).all()  # the liver is whole again
    assert (masks.lesions[0:6, 0:2, 0:2] == lesion_code("liver")).all() and np.count_nonzero(masks.lesions) == 24
    assert masks.provided == ["liver"] and masks.provided_lesions == ["liver_lesion"]
