"""benchmarks/bench_science.py end to end: a minuscule run through its command line, rerun, report-only, rescore."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from train.science.protocol import METRIC_KEYS

REPO = Path(__file__).resolve().parents[2]


def _bench(argv: list[str], results: Path) -> list[dict]:
    """Run the script; returns the results.json it wrote."""
    env = {**os.environ, "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_science.py"), *argv], env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(results.read_text())


def test_minuscule_run_writes_one_entry_per_arm_and_seed(tmp_path):
    results = tmp_path / "out/results.json"
    argv = ["--scale", "smoke", "--work-dir", str(tmp_path / "work"), "--results", str(results),
            "--seeds", "3", "--arms", "masks_only", "masks_reports_truth",
            "--set", "pool_cases=4", "--set", "mask_cases=2", "--set", "test_cases=3",
            "--set", "phantom_shape=[32,32,24]", "--set", "jobs=1",
            "--train-set", "optim.total_steps=2", "--train-set", "optim.warmup_steps=1",
            "--train-set", "data.patch_size=[16,16,16]"]
    entries = _bench(argv, results)
    # results.json holds exactly the finished runs (masks_only sorts before masks_reports_truth, as in ARMS)
    written = [json.loads(p.read_text()) for p in sorted((tmp_path / "work/runs").glob("*/result.json"))]
    assert written == entries
    assert [(e["arm"], e["seed"]) for e in written] == [("masks_only", 3), ("masks_reports_truth", 3)]
    for e in written:
        assert set(METRIC_KEYS) <= set(e)
        assert e["mask_cases"] == 2 and e["steps"] == 2
        assert 0.0 <= e["specificity"] <= 1.0 and 0.0 <= e["sensitivity"] <= 1.0
    assert written[0]["report_cases"] == 0 and written[1]["report_cases"] == 2
    assert (tmp_path / "out/results.md").read_text().count("masks_reports_truth") >= 3
    assert (tmp_path / "out/results.png").stat().st_size > 1000
    # A rerun reuses the finished runs instead of training again.
    (masks_only_result,) = (tmp_path / "work/runs").glob("masks_only_seed3_*/result.json")
    stamp = masks_only_result.stat().st_mtime_ns
    assert _bench(argv, results) == entries
    assert masks_only_result.stat().st_mtime_ns == stamp
    # --report-only rewrites results.json from the finished runs, not from a stale file.
    results.write_text("[]")
    assert _bench([*argv, "--report-only"], results) == entries
    # --rescore predicts and scores again from the kept checkpoints, keeping the training time.
    train_seconds = [e["train_seconds"] for e in entries]
    rescored = _bench([*argv, "--rescore"], results)
    assert masks_only_result.stat().st_mtime_ns != stamp
    assert [(e["arm"], e["seed"], e["train_seconds"]) for e in rescored] == [
        (e["arm"], e["seed"], t) for e, t in zip(entries, train_seconds)]
    assert [e["auroc"] for e in rescored] == [e["auroc"] for e in entries]
    entries, stamp = rescored, masks_only_result.stat().st_mtime_ns
    # A report-loss or report-schedule change keys the report arm anew (never resuming its checkpoint), not masks-only.
    changed = _bench([*argv, "--train-set", "loss.ball_positive_fraction=0.4",
                      "--train-set", "optim.report_start_step=1"], results)
    assert changed[0] == entries[0] and changed[1]["fingerprint"] != entries[1]["fingerprint"]
    assert len(list((tmp_path / "work/runs").glob("masks_reports_truth_seed3_*/result.json"))) == 2
    assert masks_only_result.stat().st_mtime_ns == stamp


def test_no_mask_protocol_trains_each_held_out_organ_and_the_control_once(tmp_path):
    results = tmp_path / "out/results.json"
    argv = ["--scale", "smoke", "--protocol", "no_mask", "--work-dir", str(tmp_path / "work"),
            "--results", str(results), "--seeds", "3", "--set", "pool_cases=6", "--set", "mask_cases=2",
            "--set", "test_cases=3", "--set", "phantom_shape=[32,32,24]", "--set", "jobs=1",
            "--set", "no_mask_organs=[pancreas,kidney]", "--train-set", "optim.total_steps=2",
            "--train-set", "optim.warmup_steps=1", "--train-set", "data.patch_size=[16,16,16]"]
    env = {**os.environ, "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_science.py"), *argv], env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads((tmp_path / "out/results_no_mask.json").read_text())
    held = out["held_out"]
    assert sorted(held) == ["kidney", "pancreas"]
    for organ, entries in held.items():
        assert [(e["arm"], e["no_mask_organ"]) for e in entries] == [
            ("masks_only", organ), ("masks_reports_truth", organ), ("masks_all", None)]
        assert all({"liver", "pancreas", "kidney"} == set(e["organs"]) for e in entries)
    # five runs: two per held-out organ and one all-masks control shared by both
    assert len(list((tmp_path / "work/runs").glob("*/result.json"))) == 5
    assert held["kidney"][2] == held["pancreas"][2]
    assert "## No kidney masks" in (tmp_path / "out/results_no_mask.md").read_text()
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_science.py"), *argv,
                          "--arms", "masks_reports_extracted"], env=env, capture_output=True, text=True)
    assert res.returncode != 0 and "no_mask runs the arms" in res.stderr


def test_the_active_round_never_writes_the_arm_comparisons_table():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_science", REPO / "benchmarks" / "bench_science.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    arms, _ = bench.resolve_settings(["--scale", "cpu"])
    active, _ = bench.resolve_settings(["--scale", "cpu", "--protocol", "active"])
    assert arms.results == Path("benchmarks/science/results.json")
    assert active.results == Path("benchmarks/science/results_active_cpu.json")
    al_cpu, _ = bench.resolve_settings(["--scale", "al_cpu", "--protocol", "active"])
    assert al_cpu.results.name == "results_al_cpu.json"
    chosen, _ = bench.resolve_settings(["--scale", "cpu", "--protocol", "active", "--results", "x/r.json"])
    assert chosen.results == Path("x/r.json")
