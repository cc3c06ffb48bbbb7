"""Train, predict and score one (arm, seed) of the science benchmark, and find the finished runs.

Evaluation: ``rsuper predict`` outputs (:func:`train.predict.predict_case`) per test CT, then per CT (organs pooled,
:func:`train.evaluate.per_ct_metrics`). ``rsuper evaluate`` (per organ, Dice / NSD) is also run on every prediction
folder and kept next to it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from train.science.draws import read_truth
from train.science.extraction import load_extracted_records, rsuper_command
from train.science.protocol import (ARMS, ScienceSettings, arm_cases, arm_config, pool_cases, run_dir_of,
                                    seed_mask_ids)


def run_one(settings: ScienceSettings, arm: str, seed: int, fingerprint: str) -> dict:
    """Train, predict and score one (arm, seed); writes and returns its run directory's ``result.json``.

    Runs in a worker process when ``jobs`` > 1, so it reads everything it needs from disk.
    """
    import torch

    from train.data.records import records_from_ground_truth

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    run_dir, run_fp = run_dir_of(settings, arm, seed, fingerprint)
    pool, test = settings.work_dir / "pool", settings.work_dir / "test"
    base = pool_cases(pool)
    records: dict = {}
    if arm == "masks_reports_truth":
        records = records_from_ground_truth(pool / "ground_truth.jsonl")
    elif arm == "masks_reports_extracted":
        records = load_extracted_records(settings, [c.report_id for c in base])
    mask_ids = seed_mask_ids(settings, seed)
    cases, dropped = arm_cases(arm, base, mask_ids, records, settings.no_mask_organ)
    config = arm_config(settings, arm, seed, run_dir / "train")
    checkpoint, train_s = train_arm(config, cases)
    train_s = record_train_seconds(run_dir, train_s)
    metrics, eval_s = evaluate_run(settings, checkpoint, test, run_dir)
    entry = {"arm": arm, "seed": seed, **metrics, "scale": settings.scale,
             "no_mask_organ": None if arm == "masks_all" else settings.no_mask_organ,
             "mask_cases": sum(c.has_mask for c in cases), "report_cases": sum(not c.has_mask for c in cases),
             "report_cases_without_record": dropped, "steps": config.optim.total_steps,
             "threshold_mm3": settings.threshold_mm3, "train_seconds": round(train_s, 1),
             "eval_seconds": round(eval_s, 1), "fingerprint": run_fp}
    (run_dir / "result.json").write_text(json.dumps(entry, indent=1))
    return entry


def train_arm(config: Any, cases: list) -> tuple[Path, float]:
    """Train (resuming a killed run) and return the checkpoint and the training seconds of this call (0 when the
    checkpoint had finished already)."""
    from train.datasource import CaseData, cases_fingerprint
    from train.distributed import setup_distributed
    from train.trainer import Trainer

    cache = Path(config.data.cache_dir)
    data = CaseData(config.data, cases, [], cache, cases_fingerprint(cases))
    data.dataset.prepare(progress=False)
    t0 = time.perf_counter()
    # The benchmark fingerprint guards the settings; code edits elsewhere may change the trainer's own hash.
    trainer = Trainer(config, data, setup_distributed(config.device), resume=True, allow_config_change=True)
    if trainer.step >= config.optim.total_steps:  # finished earlier (a rescore)
        return Path(config.output_dir) / "latest.pt", 0.0
    trainer.fit()
    if trainer.step < config.optim.total_steps:  # stopped by a signal: never score a half-trained network
        raise RuntimeError(f"{config.output_dir}: training stopped at step {trainer.step}; rerun to resume")
    return Path(config.output_dir) / "latest.pt", time.perf_counter() - t0


def record_train_seconds(run_dir: Path, seconds: float) -> float:
    """Add one call's training seconds to the run's total (``timing.json``) and return the total, so a resumed or
    rescored run reports the time of its whole training."""
    path = run_dir / "timing.json"
    total = (json.loads(path.read_text())["train_seconds"] if path.is_file() else 0.0) + seconds
    path.write_text(json.dumps({"train_seconds": total}))
    return total


def predict_test(checkpoint: Path, test: Path, out: Path, overlap: float) -> dict[str, dict]:
    """``rsuper predict`` on every test CT (skipping finished ones); ct_id -> summary."""
    import torch

    from train.predict import load_network, predict_case

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net, config = load_network(checkpoint, device)
    summaries = {}
    for case_dir in sorted((test / "cases").iterdir()):
        done = out / case_dir.name / "summary.json"
        if done.is_file():
            summaries[case_dir.name] = json.loads(done.read_text())
            continue
        summaries[case_dir.name] = predict_case(net, config, case_dir / "ct.nii.gz", out / case_dir.name,
                                                overlap=overlap, device=device)
    return summaries


def official_evaluate(pred: Path, test: Path, out: Path, threshold_mm3: float) -> None:
    """``rsuper evaluate`` (per-organ Dice / NSD and detection) into ``out``; its table goes to out/table.txt."""
    out.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([*rsuper_command(), "evaluate", str(pred), "--truth", str(test), "--records", "truth",
                          "--threshold-mm3", str(threshold_mm3), "--out", str(out)],
                         capture_output=True, text=True)
    (out / "table.txt").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        raise RuntimeError(f"rsuper evaluate failed ({res.returncode}): see {out / 'table.txt'}")


def evaluate_run(settings: ScienceSettings, checkpoint: Path, test: Path, run_dir: Path) -> tuple[dict, float]:
    """Predict the test set and score it per CT, organs pooled and each organ alone (``organs``); returns the
    metrics and the seconds taken."""
    from train.data.labels import load_label_names
    from train.evaluate import lesion_dice, lesion_dice_per_class, per_ct_metrics, per_organ_metrics

    t0 = time.perf_counter()
    pred = run_dir / "predictions"
    summaries = predict_test(checkpoint, test, pred, settings.predict_overlap)
    truth = read_truth(test)
    dice = {ct: lesion_dice(pred / ct / "lesions.nii.gz", test / "cases" / ct / "lesions.nii.gz")
            for ct in summaries if truth[ct]["tumors"]}
    metrics = per_ct_metrics(summaries, truth, dice, settings.threshold_mm3, settings.small_mm)
    lesion_names = load_label_names(test / "lesion_labels.json")
    class_dice = {ct: lesion_dice_per_class(pred / ct, test / "cases" / ct / "lesions.nii.gz", lesion_names)
                  for ct in summaries}
    metrics["organs"] = per_organ_metrics(summaries, truth, class_dice, settings.threshold_mm3)
    if settings.official_evaluate:
        official_evaluate(pred, test, run_dir / "evaluate", settings.threshold_mm3)
    return metrics, time.perf_counter() - t0


def collect_entries(settings: ScienceSettings, fingerprint: str) -> list[dict]:
    """Every finished (arm, seed) result under ``work_dir/runs`` made with these settings (any seed)."""
    out = []
    for path in sorted((settings.work_dir / "runs").glob("*/result.json")):
        entry = json.loads(path.read_text())
        if entry.get("arm") in ARMS and path.parent == run_dir_of(settings, entry["arm"], entry["seed"],
                                                                  fingerprint)[0]:
            out.append(entry)
    return out


def forget_scores(settings: ScienceSettings, fingerprint: str) -> list[tuple[str, int]]:
    """Delete the predictions and scores of the selected finished runs (keeping checkpoints and training time), so
    the next pass predicts and scores them again with the current code. Returns the (arm, seed) pairs reset."""
    reset = []
    for entry in collect_entries(settings, fingerprint):
        if entry["arm"] not in settings.arms or entry["seed"] not in settings.seeds:
            continue
        run_dir = run_dir_of(settings, entry["arm"], entry["seed"], fingerprint)[0]
        timing = run_dir / "timing.json"
        if not timing.is_file():
            timing.write_text(json.dumps({"train_seconds": entry["train_seconds"]}))
        for name in ("predictions", "evaluate"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
        (run_dir / "result.json").unlink()
        reset.append((entry["arm"], entry["seed"]))
    return reset
