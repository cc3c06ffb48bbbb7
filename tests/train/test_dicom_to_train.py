"""docs/data.md, "From PACS: DICOM studies and a report dump to `rsuper train`", command by command.

Every step is the real console command (`python -m rsuper ...` in a fresh process), run in a project folder with
the docs' relative paths (the default store data/rsuper.duckdb, images in data/ct), on inputs as a user has them:

1. a report dump keyed by accession number (short reports written here from the phantoms' tumours) ->
   `rsuper ingest`;
2. a PACS export of four phantom studies (scout, arterial, portal venous; `train.dicom.synthetic`, files without
   extensions in nested and flat folders) -> `rsuper images import pacs_export --out data/ct`;
3. organ masks as TotalSegmentator run elsewhere leaves them, one file per `total` class in
   `data/ct/cases/<ct_id>/segmentations/`, on the converted CT's grid -> `rsuper organs data/ct`;
4. `rsuper cases data/ct`;
5. `rsuper extract` against a scripted OpenAI-compatible server (tests/extract/fake_server.py) answering in the
   citing format;
6. `rsuper train train.yaml` with `data: {source: cases, root: data/ct, records: store}`, three CPU steps.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from schemas.label_aliases import TOTALSEGMENTATOR_TOTAL
from train.data.labels import CANONICAL_INDEX as C
from train.data.phantoms import ORGAN_LABELS, PhantomConfig, generate_case
from train.dicom.synthetic import StudyTags, uid, write_phantom_study

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# One measured tumour per case (seed 2: in the pancreatic head, liver segment 6, the right kidney, liver segment 7;
# cases 1 and 2 stored with flipped x / y axes). 48 slices over 200 mm: the 4.2 mm portal-venous series passes the
# default series rule (at most 5 mm), the 8.3 mm arterial one (every second slice) does not.
PHANTOMS = PhantomConfig(n=4, seed=2, shape=(40, 40, 48), field_of_view_z_mm=200.0,
                         tumor_count_probabilities=(0.0, 1.0), small_lesion_probability=0.0, flip_probability=0.5)
ORGANS = ("liver", "pancreas", "kidney", "spleen")
HEADERS = {"liver": "Liver", "pancreas": "Pancreas", "kidney": "Kidneys", "spleen": "Spleen"}
# TotalSegmentator `total` classes made from the phantom's label values; its other classes are written empty.
TS_CLASSES = {"liver": range(1, 9), "pancreas": (9, 10, 11), "kidney_right": (12,), "kidney_left": (13,),
              "spleen": (14,)}
assert set(ORGAN_LABELS) == {0, *(v for values in TS_CLASSES.values() for v in values)}
TIMEOUT_S = 300


def _fake_server():
    """tests/extract/fake_server.py (the extraction tests put their folder on sys.path; this one loads the file)."""
    module = sys.modules.get("fake_server")
    if module is None:
        spec = importlib.util.spec_from_file_location("fake_server", REPO / "tests" / "extract" / "fake_server.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["fake_server"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return module


def rsuper(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """`rsuper ARGS` as a user types it, in ``cwd``; it must exit 0."""
    proc = subprocess.run([sys.executable, "-m", "rsuper", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"rsuper {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-4000:]}"
    return proc


def last_json(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report_for(tumor: dict) -> tuple[str, str]:
    """A short report describing the phantom's one tumour, and the sentence that describes it."""
    size = " x ".join(f"{d:g}" for d in tumor["diameters_mm"]) + " mm"
    density = {"hypo": "hypodense", "hyper": "hyperdense"}[tumor["attenuation"]]
    organ = tumor["organ"]
    segment = tumor["segments"][0].rsplit("_", 1)[1] if tumor["segments"] else None
    if organ == "liver":
        lesion = f"Liver: A {size} {density} lesion" + (f" in segment {segment}." if segment else ".")
    elif organ == "pancreas":
        lesion = f"Pancreas: A {size} {density} mass" + (f" in the pancreatic {segment}." if segment else ".")
    else:
        lesion = f"Kidneys: A {size} {density} mass in the {tumor['laterality']} kidney."
    lines = ["EXAMINATION: CT abdomen with intravenous contrast, portal venous phase.", "FINDINGS:"]
    for o in ORGANS:
        lines.append(lesion if o == organ else f"{HEADERS[o]}: Normal.")
    lines.append("Bones: No aggressive osseous lesion.")
    return "\n".join(lines) + "\n", lesion


def cited_answer(report: str, lesion: str, organ: str) -> str:
    """The answer a model gives in the citing format: the lesion's sentence number, the other organs normal."""
    from extract.ingest import normalize_text
    from extract.reading.sentences import sentence_spans

    text = normalize_text(report)
    spans = sentence_spans(text)
    (n,) = [i for i, s in enumerate(spans, 1) if text[s.start:s.end].strip() in lesion]
    return json.dumps({"lesions": [{"organ": organ, "sentences": [n], "count": 1, "count_exact": True}],
                       "normal": [o for o in ORGANS if o != organ], "resected": []})


def write_totalsegmentator_folder(case_dir: Path, phantom) -> None:
    """`case_dir/segmentations/<class>.nii.gz` for every `total` class, resampled (nearest voxel) from the
    phantom's organ labels onto the grid of the converted `case_dir/ct.nii.gz`."""
    ct = nib.load(case_dir / "ct.nii.gz")
    ijk = np.indices(ct.shape, dtype=float).reshape(3, -1)
    to_phantom = np.linalg.inv(phantom.affine) @ ct.affine
    src = np.rint(to_phantom[:3, :3] @ ijk + to_phantom[:3, 3:]).astype(int)
    assert (src >= 0).all() and (src < np.array(phantom.organs.shape)[:, None]).all()
    labels = phantom.organs[tuple(src)].reshape(ct.shape)
    out = case_dir / "segmentations"
    out.mkdir()
    for name in TOTALSEGMENTATOR_TOTAL:
        mask = np.isin(labels, list(TS_CLASSES.get(name, ()))).astype(np.uint8)
        img = nib.Nifti1Image(mask, ct.affine)
        img.set_qform(ct.affine, code=1)
        img.set_sform(ct.affine, code=1)
        nib.save(img, out / f"{name}.nii.gz")


def test_dicom_export_and_report_dump_to_rsuper_train(tmp_path):
    # The commands run in a project folder (tmp_path) with the paths of docs/data.md: the store is the default
    # data/rsuper.duckdb there (RSUPER_DB unset; `make test` exports one), the images go to data/ct.
    env = {k: v for k, v in os.environ.items() if k != "RSUPER_DB"}
    env.update(TQDM_DISABLE="1", PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])]))
    db = tmp_path / "data" / "rsuper.duckdb"
    phantoms = [generate_case(PHANTOMS, i) for i in range(PHANTOMS.n)]
    tumors = {p.report_id: p.ground_truth["tumors"][0] for p in phantoms}

    # 1. The report dump, keyed by accession number, plus a report no study belongs to.
    reports = {rid: report_for(t) for rid, t in tumors.items()}
    with (tmp_path / "reports.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["Accession Number", "Report Text"])
        w.writerows([(rid, text) for rid, (text, _) in reports.items()])
        w.writerow(["ACC_WITHOUT_CT", "CT abdomen. Liver: Normal."])
    rsuper("ingest", "reports.csv", env=env, cwd=tmp_path)
    assert db.is_file()

    # 2. The PACS export: three series per study, nested patient/study folders and one flat folder.
    for i, p in enumerate(phantoms):
        folder = tmp_path / "pacs_export" / (f"patient{i}/study" if i % 2 == 0 else "flat")
        write_phantom_study(folder, p.ct, p.affine, StudyTags(uid("issue21", i), p.report_id, patient_id=f"P{i}"))
    imported = rsuper("images", "import", "pacs_export", "--out", "data/ct", env=env, cwd=tmp_path)
    summary = last_json(imported)
    assert summary["studies"] == summary["imported"] == summary["cases"] == summary["joined"] == 4, imported.stderr
    assert summary["cases_table_written"] and summary["reports_without_ct"] == 1
    assert "no CT for report: ACC_WITHOUT_CT" in imported.stderr
    out = tmp_path / "data" / "ct"
    with (out / "case_reports.csv").open(newline="") as fh:
        ct_of = {row["report_id"]: row["ct_id"] for row in csv.DictReader(fh)}
    assert sorted(ct_of) == sorted(tumors)
    for p in phantoms:  # the portal-venous series, voxel for voxel
        case_dir = out / "cases" / ct_of[p.report_id]
        assert json.loads((case_dir / "dicom.json").read_text())["chosen_series"]["description"] == "Portal venous"
        ct = nib.load(case_dir / "ct.nii.gz")
        assert np.allclose(ct.affine, p.affine, atol=1e-3)
        assert np.array_equal(np.asarray(ct.dataobj), np.rint(p.ct).astype(np.int16))

    # 3. TotalSegmentator's class files, made elsewhere, moved into each case folder -> our label map.
    for p in phantoms:
        write_totalsegmentator_folder(out / "cases" / ct_of[p.report_id], p)
    organs = rsuper("organs", "data/ct", env=env, cwd=tmp_path)
    done = last_json(organs)
    assert (done["written"], done["skipped_done"], done["problems"]) == (4, 0, 0), organs.stderr
    assert "ignored (no organ key): " in organs.stderr and "aorta" in organs.stderr  # vessels, muscles, ...
    assert (out / "labels.json").is_file()

    # 4. The cases table again, now with the organ masks.
    cases = rsuper("cases", "data/ct", env=env, cwd=tmp_path)
    assert last_json(cases)["cases"] == 4 and last_json(cases)["problems"] == 0, cases.stderr
    from extract.store import Store

    with Store(db, read_only=True) as store:
        rows = store.query("SELECT ct_id, report_id, organ_mask_path, split FROM cases ORDER BY ct_id").to_pylist()
    assert {r["report_id"]: r["ct_id"] for r in rows} == ct_of
    # absolute, so training may run from any folder
    assert [r["organ_mask_path"] for r in rows] == [str(out.resolve() / "cases" / r["ct_id"] / "organs.nii.gz")
                                                    for r in rows]
    for p in phantoms:  # every organ where the phantom has it; head / body / tail split by geometry
        lab = np.asarray(nib.load(out / "cases" / ct_of[p.report_id] / "organs.nii.gz").dataobj)
        for ours, values in {("liver",): range(1, 9), ("spleen",): (14,), ("kidney_right",): (12,),
                             ("kidney_left",): (13,),
                             ("pancreas_head", "pancreas_body", "pancreas_tail"): (9, 10, 11)}.items():
            assert np.array_equal(np.isin(lab, [C[n] for n in ours]), np.isin(p.organs, list(values))), ours
        assert np.array_equal(lab > 0, p.organs > 0)

    # 5. Report records: `rsuper extract` against a scripted server answering in the citing format.
    fake = _fake_server()
    from extract.ingest import normalize_text

    answers = {normalize_text(text): cited_answer(text, lesion, tumors[rid]["organ"])
               for rid, (text, lesion) in reports.items()}
    with fake.FakeLLMServer(answers=answers) as server:
        extracted = rsuper("extract", "--backend", "openai", "--llm-url", server.url, "--model", "fake-model",
                           "--concurrency", "2", "--retries", "0", "--no-progress", "--json", env=env, cwd=tmp_path)
    assert last_json(extracted)["ok"] == 5, extracted.stderr
    assert {fake.report_of(b) for b in server.requests} >= set(answers)  # every answer was asked for
    from train.data.records import load_case_records

    with Store(db, read_only=True) as store:
        records = load_case_records(store, list(tumors))
    for rid, t in tumors.items():
        (got,) = records[rid].tumors
        assert (got.organ, got.diameters_mm, got.attenuation, got.segments) == (
            t["organ"], tuple(t["diameters_mm"]), t["attenuation"], tuple(t["segments"])), (rid, got)
        assert got.side == (t["laterality"] if t["organ"] == "kidney" else None)
        assert records[rid].lesion_free >= set(ORGANS) - {t["organ"]}

    # 6. `rsuper train CONFIG.yaml` on the cases table and the extracted records.
    (tmp_path / "train.yaml").write_text("""\
output_dir: runs/pacs
cpu_threads: 1
data:
  source: cases
  root: data/ct
  records: store
  classes: [liver, pancreas, kidney, liver_lesion, pancreas_lesion, kidney_lesion]
  patch_size: [16, 16, 16]
  batch_size: 2
  intensity_augmentation: false
model: {filters: [4, 8, 16]}
optim: {total_steps: 3, warmup_steps: 1, lr: 0.01}
validation: {every_steps: 1000, checkpoint_every_steps: 1}
log_every_steps: 1
""")
    trained = rsuper("train", "train.yaml", env=env, cwd=tmp_path)
    assert json.loads(trained.stdout.splitlines()[0])["step"] == 3
    run = tmp_path / "runs" / "pacs"
    from train.checkpoint import load_checkpoint

    assert load_checkpoint(run / "latest.pt")["step"] == 3
    # It trained on the table's training split, every case supervised by its extracted report (no lesion masks;
    # the validation split has no mask case to validate on).
    assert "4 cases from the `cases` table of data/rsuper.duckdb" in trained.stderr
    (described,) = [line for line in trained.stderr.splitlines() if line.startswith("training data: ")]
    n_train = sum(r["split"] == "train" for r in rows)
    assert n_train >= 2 and json.loads(described.removeprefix("training data: ")) == {
        "train_cases": n_train, "train_with_masks": 0, "train_report_only": n_train, "train_unsupervised": 0,
        "val_cases": 0}
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if m["kind"] == "train"]
    assert [m["step"] for m in steps] == [1, 2, 3] and all(np.isfinite(m["loss"]) for m in steps)
    assert all(m["report_weight"] > 0 and m["n_volume"] > 0 for m in steps)  # the report losses had targets
