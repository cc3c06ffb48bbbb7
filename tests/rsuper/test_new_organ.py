"""A tumour type added without code: an organ table (RSUPER_VOCABULARY) names `appendix`, an organ the phantoms
do not have, and the commands take it from there: the LLM is offered it, `rsuper extract` stores its records,
SQL sees it in `tumors` and `ct_summary`, the report losses train its lesion channel from the records alone, and
`rsuper train` / `rsuper predict` run with it. Without the table, the same config is refused by name."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "extract"))

from fake_server import Action, FakeLLMServer  # noqa: E402

EXTENSION = """\
organs:
  appendix:
    words: [appendix, appendiceal]
    max_diameter_mm: 120
"""
REPORT = ("EXAM: CT abdomen and pelvis with contrast. COMPARISON: CT of 2026-0{month}-12.\n"
          "FINDINGS: The liver is normal in size without focal lesion. "
          "Pancreas: unremarkable. There is a 14 mm hypoattenuating mass at the tip of the appendix. The kidneys "
          "are unremarkable.\nIMPRESSION: Appendiceal mass, as above.")
CLASSES = ["liver", "pancreas", "kidney", "appendix", "liver_lesion", "pancreas_lesion", "kidney_lesion",
           "appendix_lesion"]


def _cited_answer(body: dict) -> Action:
    """Cite the numbered sentence that names the appendix mass, as a model would."""
    shown = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    number = int(re.search(r"\[(\d+)\] There is a 14 mm", shown).group(1))
    return Action(content=json.dumps({"lesions": [{"organ": "appendix", "sentences": [number], "count": 1,
                                                   "count_exact": True}],
                                      "normal": ["liver", "pancreas", "kidney"], "resected": []}))


def _dataset(root: Path) -> list[str]:
    """Phantoms whose spleen is relabelled `appendix`, with a hypodense 14 mm ball painted in it; report ids."""
    import nibabel as nib

    from train.data.phantoms import PhantomConfig, write_phantom_set

    write_phantom_set(root, PhantomConfig(n=4, seed=5, shape=(48, 48, 32), tumor_count_probabilities=(0, 1, 0, 0),
                                          small_lesion_probability=0.0))
    labels = json.loads((root / "labels.json").read_text())
    value = next(int(k) for k, v in labels.items() if v == "spleen")
    labels[str(value)] = "appendix"
    (root / "labels.json").write_text(json.dumps(labels))
    for case in sorted((root / "cases").iterdir()):
        ct_img = nib.load(case / "ct.nii.gz")
        organ = np.asarray(nib.load(case / "organs.nii.gz").dataobj) == value
        ct = np.asarray(ct_img.dataobj).astype(np.int16)
        spacing = np.linalg.norm(ct_img.affine[:3, :3], axis=0)
        centre = np.argwhere(organ).mean(0)
        grid = np.indices(ct.shape).transpose(1, 2, 3, 0)
        ball = (((grid - centre) * spacing) ** 2).sum(-1) <= 7.0 ** 2
        ct[ball & organ] = int(ct[organ].mean()) - 60
        nib.save(nib.Nifti1Image(ct, ct_img.affine, ct_img.header), case / "ct.nii.gz")
    with (root / "case_reports.csv").open(newline="") as fh:
        return [row["report_id"] for row in csv.DictReader(fh)]


def _rsuper(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rsuper", *args], env=env, capture_output=True, text=True,
                          cwd=REPO, timeout=600)


GRADIENT_CHECK = textwrap.dedent("""
    import json, sys, torch
    from train.config import load_config
    from train.datasource import CaseData
    from train.factories import build_loss

    config = load_config(sys.argv[1])
    data = CaseData.from_config(config.data, seed=0)
    loss_fn = build_loss(config)
    lesion, organ = config.data.classes.index("appendix_lesion"), config.data.classes.index("appendix")
    crops = inside = 0
    for _, batch in zip(range(8), data.train_batches(0, 1, seed=0)):
        logits = torch.zeros(batch["labels"].shape, requires_grad=True)
        total, _ = loss_fn([logits], batch["labels"], batch["unknown_mask"], batch["has_mask"], batch["targets"],
                           batch["image_hu"])
        total.backward()
        grad = logits.grad[:, lesion].abs()
        in_organ = batch["labels"][:, organ] > 0
        for i in range(grad.shape[0]):
            if in_organ[i].any() and not batch["has_mask"][i]:  # a report crop: no mask has appendix tumours
                crops += 1
                inside += int(grad[i][in_organ[i]].sum() > 0)
    print(json.dumps({"report_crops_with_appendix": crops, "trained_inside_appendix": inside}))
""")


def test_an_organ_from_an_organ_table_is_extracted_stored_and_trained(tmp_path):
    import duckdb

    root = tmp_path / "data"
    report_ids = _dataset(root)
    (tmp_path / "appendix.yaml").write_text(EXTENSION)
    reports = tmp_path / "reports.csv"
    with reports.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Accession Number", "Report Text"])
        writer.writerows([rid, REPORT.format(month=i + 1)] for i, rid in enumerate(report_ids))
    db = tmp_path / "store.duckdb"
    plain = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO)}
    plain.pop("RSUPER_VOCABULARY", None)
    env = {**plain, "RSUPER_VOCABULARY": str(tmp_path / "appendix.yaml")}

    # A store made before the organ existed follows the vocabulary once opened with it.
    assert _rsuper("ingest", str(reports), "--db", str(db), env=plain).returncode == 0
    with FakeLLMServer(respond=lambda i, body: _cited_answer(body)) as server:
        res = _rsuper("extract", "--db", str(db), "--backend", "openai", "--llm-url", server.url, "--model",
                      "fake-model", "--no-progress", "--json", env=env)
        assert res.returncode == 0, res.stderr[-2000:]
        assert len(server.requests) == len(report_ids)
        assert '"appendix"' in json.dumps(server.requests[0].get("response_format", server.requests[0]))
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT organ, largest_diameter_mm, attenuation FROM tumors ORDER BY report_id").fetchall()
        assert rows == [("appendix", 14.0, "hypo")] * len(report_ids)
        summary = con.execute("SELECT appendix_lesion_count, appendix_largest_diameter_cm, liver_lesion_count "
                              "FROM ct_summary").fetchall()
        assert summary == [(1, 1.4, 0)] * len(report_ids)

    config = tmp_path / "train.yaml"
    config.write_text(json.dumps({
        "output_dir": str(tmp_path / "run"), "seed": 0, "cpu_threads": 1,
        "data": {"source": "cases", "root": str(root), "db": str(db), "records": "store", "classes": CLASSES,
                 "patch_size": [24, 24, 24], "batch_size": 2, "mask_fraction": 0.5, "report_only_fraction": 0.5,
                 "val_fraction": 0.25, "max_val_cases": 1, "intensity_augmentation": False,
                 "foreground_probability": 0.9},
        "model": {"name": "dynunet", "filters": [8, 16, 32]},
        "optim": {"total_steps": 3, "warmup_steps": 1, "report_start_step": 0, "report_ramp_steps": 0},
        "validation": {"every_steps": 1000, "checkpoint_every_steps": 3},
    }))
    refused = _rsuper("train", str(config), env=plain)
    assert refused.returncode != 0 and "appendix" in refused.stderr and "unknown channel" in refused.stderr

    # The report losses reach the new lesion channel inside its organ, from the records alone (no mask has it).
    check = subprocess.run([sys.executable, "-c", GRADIENT_CHECK, str(config)], env=env, capture_output=True,
                           text=True, cwd=REPO, timeout=600)
    assert check.returncode == 0, check.stderr[-2000:]
    seen = json.loads(check.stdout.strip().splitlines()[-1])
    assert seen["report_crops_with_appendix"] > 0
    assert seen["trained_inside_appendix"] == seen["report_crops_with_appendix"], seen

    res = _rsuper("train", str(config), env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    ct = sorted((root / "cases").iterdir())[0]
    res = _rsuper("predict", str(tmp_path / "run" / "latest.pt"), str(ct / "ct.nii.gz"), "--out",
                  str(tmp_path / "pred"), "--pages", "0", env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    (summary_file,) = (tmp_path / "pred").glob("*/summary.json")
    organs = json.loads(summary_file.read_text())["organs"]
    assert set(organs) == {"liver", "pancreas", "kidney", "appendix"}
