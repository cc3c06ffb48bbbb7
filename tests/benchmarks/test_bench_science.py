"""The science benchmark's plumbing: test-set strata, mask-case draw, per-CT metrics, and a minuscule end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_science", REPO / "benchmarks" / "bench_science.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_science"] = module
    spec.loader.exec_module(module)
    return module


def test_tumor_diameters_match_the_rendered_phantom(bench):
    from train.data.phantoms import PhantomConfig, generate_case

    config = PhantomConfig(n=4, seed=5, shape=(24, 24, 16))
    for i in range(4):
        truth = [max(t["true_diameters_mm"]) for t in generate_case(config, i).ground_truth["tumors"]]
        assert bench.tumor_diameters(config, i) == pytest.approx(truth, abs=0.01)


def test_strata_and_quotas(bench):
    assert bench.test_stratum([], 5, 40, 20) == "free"
    assert bench.test_stratum([12.0, 19.9], 5, 40, 20) == "small"
    assert bench.test_stratum([12.0, 20.0], 5, 40, 20) == "large"
    assert bench.test_stratum([4.0, 30.0], 5, 40, 20) is None
    assert bench.test_stratum([41.0], 5, 40, 20) is None
    assert bench.test_quotas(60, 0.3, 0.5) == {"free": 18, "small": 21, "large": 21}
    assert bench.test_quotas(3, 0.3, 0.5) == {"free": 1, "small": 1, "large": 1}


def _settings(bench, tmp_path: Path, **kw):
    base = dict(scale="test", train_config=REPO / "configs/science/cpu.yaml", work_dir=tmp_path / "work",
                results=tmp_path / "out" / "results.json", pool_cases=4, mask_cases=2, test_cases=3,
                phantom_shape=(32, 32, 24))
    return bench.ScienceSettings(**{**base, **kw})


def test_select_test_indices_fills_every_stratum(bench, tmp_path):
    settings = _settings(bench, tmp_path, test_cases=10)
    config = bench.test_phantom_config(settings)
    indices = bench.select_test_indices(settings)
    strata = [bench.test_stratum(bench.tumor_diameters(config, i), 5, 40, 20) for i in indices]
    assert len(set(indices)) == 10
    assert {s: strata.count(s) for s in set(strata)} == {"free": 3, "small": 4, "large": 3}


def test_pool_is_rendered_once_and_again_when_its_tumour_mix_changes(bench, tmp_path):
    settings = _settings(bench, tmp_path, pool_cases=3, pool_tumor_count_probabilities=(0.0, 0.0, 0.0, 1.0))
    pool = bench.ensure_pool(settings)
    truth = bench.read_truth(pool)
    assert len(truth) == 3 and all(len(row["tumors"]) == 3 for row in truth.values())
    stamp = (pool / "ground_truth.jsonl").stat().st_mtime_ns
    assert bench.ensure_pool(settings) == pool
    assert (pool / "ground_truth.jsonl").stat().st_mtime_ns == stamp  # same settings: reused

    (pool / "cases" / "stale_case").mkdir()
    tumour_free = settings.model_copy(update={"pool_tumor_count_probabilities": (1.0,)})
    bench.ensure_pool(tumour_free)
    assert all(row["tumors"] == [] for row in bench.read_truth(pool).values())
    assert not (pool / "cases" / "stale_case").exists()
    manifest = json.loads((pool / bench.SUBSET_MANIFEST).read_text())
    assert manifest["indices"] == [0, 1, 2] and manifest["generator"]["tumor_count_probabilities"] == [1.0]


def test_fewer_runs_train_while_the_llm_extracts(bench, tmp_path):
    settings = _settings(bench, tmp_path, jobs=3, extract_workers=1)
    assert bench.training_slots(settings, extraction_running=True) == 2
    assert bench.training_slots(settings, extraction_running=False) == 3
    assert bench.training_slots(_settings(bench, tmp_path, jobs=1, extract_workers=2), extraction_running=True) == 1


def test_mask_case_ids_depend_on_seed_only(bench):
    organs = {f"CT{i:02d}": frozenset({"liver"} if i % 2 else ()) for i in range(30)}
    a = bench.mask_case_ids(organs, 10, 0)
    assert len(a) == 10 and a <= set(organs)
    assert a == bench.mask_case_ids(dict(reversed(organs.items())), 10, 0)
    assert a != bench.mask_case_ids(organs, 10, 1)


def _plain_draw(organs: dict, n_mask: int, seed: int) -> set[str]:
    import numpy as np

    ordered = sorted(organs)
    return {ordered[i] for i in np.random.default_rng([seed, 8]).permutation(len(ordered))[:n_mask]}


def test_mask_case_ids_give_every_tumour_organ_a_mask_ct_and_keep_a_draw_that_does(bench):
    # One pancreas tumour among 40 CTs: the plain draw of 5 misses it for most seeds.
    organs = {f"CT{i:02d}": frozenset({"liver"} if i < 20 else {"kidney"} if i < 39 else {"pancreas", "liver"})
              for i in range(40)}
    covered = uncovered = 0
    for seed in range(20):
        plain, chosen = _plain_draw(organs, 5, seed), bench.mask_case_ids(organs, 5, seed)
        assert len(chosen) == 5
        assert {o for c in chosen for o in organs[c]} == {"liver", "kidney", "pancreas"}
        if {o for c in plain for o in organs[c]} == {"liver", "kidney", "pancreas"}:
            assert chosen == plain
            covered += 1
        else:
            assert len(chosen - plain) <= 2 and "CT39" in chosen
            uncovered += 1
    assert covered and uncovered
    # Fewer mask CTs than tumour organs: one mask CT per organ, as far as they go.
    assert len(bench.mask_case_ids(organs, 1, 0)) == 1


def test_pool_tumour_organs_read_the_ground_truth_and_name_a_bad_line(bench, tmp_path):
    (tmp_path / "ground_truth.jsonl").write_text(
        '{"ct_id": "A", "tumors": [{"organ": "liver"}, {"organ": "kidney"}]}\n{"ct_id": "B", "tumors": []}\n')
    assert bench.pool_tumour_organs(tmp_path) == {"A": {"liver", "kidney"}, "B": frozenset()}
    (tmp_path / "ground_truth.jsonl").write_text('{"ct_id": "A", "tumors": []}\n{"ct_id": "B"}\n')
    with pytest.raises(ValueError, match=r"ground_truth.jsonl, line 2"):
        bench.pool_tumour_organs(tmp_path)


def test_run_fingerprint_covers_the_mask_cts(bench):
    from train.config import TrainConfig

    config = TrainConfig()
    base = bench.run_fingerprint("f", config)
    assert bench.run_fingerprint("f", config, {"A", "B"}) == bench.run_fingerprint("f", config, {"B", "A"}) != base
    assert bench.run_fingerprint("f", config, {"A", "C"}) != bench.run_fingerprint("f", config, {"A", "B"})


def test_arm_cases_masks_all_keeps_every_mask_and_report_arms_drop_unrecorded_ones(bench):
    from train.data.cache import CaseFiles

    def pool_case(i):
        files = CaseFiles(f"CT{i}", f"ct{i}.nii.gz", f"organs{i}.nii.gz", f"lesions{i}.nii.gz", f"sha{i}", {}, None)
        return bench.PoolCase(files, f"R{i}")

    base = [pool_case(i) for i in range(4)]
    records = {"R1": "record of R1", "R2": "record of R2"}  # R3 has none (extraction failed)
    only, dropped = bench.arm_cases("masks_only", base, {"CT0"}, records)
    assert [(c.files.ct_id, c.has_mask) for c in only] == [("CT0", True)] and dropped == 0
    everything, dropped = bench.arm_cases("masks_all", base, {"CT0"}, records)
    assert [(c.files.ct_id, c.has_mask, c.records) for c in everything] == [(f"CT{i}", True, None) for i in range(4)]
    assert dropped == 0
    reports, dropped = bench.arm_cases("masks_reports_truth", base, {"CT0"}, records)
    assert [(c.files.ct_id, c.has_mask, c.records) for c in reports] == [
        ("CT0", True, None), ("CT1", False, "record of R1"), ("CT2", False, "record of R2")]
    assert dropped == 1


@pytest.mark.parametrize("scale", ["cpu", "gpu"])
def test_every_arm_gets_the_same_mask_crops_per_step(bench, tmp_path, scale):
    settings = bench.ScienceSettings.model_validate({**bench.PRESETS[scale], "scale": scale, "work_dir": tmp_path})
    configs = {arm: bench.arm_config(settings, arm, 0, tmp_path / arm) for arm in bench.ARMS}
    report = configs["masks_reports_truth"].data
    mask_crops = round(report.batch_size * report.mask_fraction)
    assert report.batch_size > mask_crops >= 1
    for arm in bench.MASK_ARMS:
        c = configs[arm]
        assert (c.data.batch_size, c.data.mask_fraction, c.loss.report_weight) == (mask_crops, 1.0, 0.0)
    assert configs["masks_reports_extracted"].data.records == "store" and report.records == "truth"
    odd = settings.model_copy(update={"train_overrides": ["data.mask_fraction=0.7"]})
    with pytest.raises(ValueError, match="whole number"):
        bench.arm_config(odd, "masks_all", 0, tmp_path / "odd")


def test_gpu_scale_network_runs_on_its_patch_grid(bench, tmp_path):
    import torch

    from train.model import build_network

    settings = bench.ScienceSettings.model_validate({**bench.PRESETS["gpu"], "scale": "gpu", "work_dir": tmp_path})
    config = bench.arm_config(settings, "masks_reports_truth", 0, tmp_path / "run")
    assert tuple(config.data.patch_size) == (96, 96, 96) and config.optim.total_steps == 4000
    net = build_network(config.model, 1, len(config.data.classes)).eval()
    with torch.no_grad():  # a 32^3 crop: the same strides as 96^3, a fraction of the CPU time
        out = net(torch.zeros(1, 1, 32, 32, 32))
    assert out.shape == (1, len(config.data.classes), 32, 32, 32)


def test_per_ct_metrics_pools_organs_and_splits_small(bench):
    def summary(vol_liver, vol_kidney, p):
        return {"organs": {"liver": {"lesion_volume_mm3": vol_liver, "max_probability": p},
                           "kidney": {"lesion_volume_mm3": vol_kidney, "max_probability": p / 2}}}

    def truth(*sizes):
        return {"tumors": [{"true_diameters_mm": [s, s * 0.8, s * 0.7]} for s in sizes]}

    summaries = {"a": summary(60, 60, 0.9), "b": summary(0, 0, 0.4), "c": summary(500, 0, 0.8),
                 "d": summary(0, 0, 0.1), "e": summary(150, 0, 0.7)}
    gt = {"a": truth(10.0), "b": truth(12.0, 30.0), "c": truth(25.0), "d": truth(), "e": truth()}
    dice = {"a": 0.5, "b": 0.0, "c": 0.9}
    m = bench.per_ct_metrics(summaries, gt, dice, threshold_mm3=100.0, small_mm=20.0)
    # all: positives a (120 mm3: hit), b (miss), c (hit); negatives d (ok), e (150 mm3: false positive)
    assert (m["n_positive"], m["n_negative"]) == (3, 2)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert m["auroc"] == pytest.approx(5 / 6)  # scores a .9, b .4, c .8 vs d .1, e .7
    assert m["dice"] == pytest.approx((0.5 + 0.0 + 0.9) / 3)
    # small: only a among the positives (b's largest is 30 mm)
    assert (m["n_positive_small"], m["n_negative_small"]) == (1, 2)
    assert m["sensitivity_small"] == 1.0
    assert m["f1_small"] == pytest.approx(2 / 3)
    assert m["dice_small"] == pytest.approx(0.5)


def test_summarise_mean_and_std(bench):
    rows = [{"arm": "masks_only", "seed": s, **{k: v for k in bench.METRIC_KEYS}, "train_seconds": 1.0,
             "eval_seconds": 2.0} for s, v in ((0, 0.2), (1, 0.4))]
    rows[1]["dice_small"] = math.nan
    s = bench.summarise(rows)["masks_only"]
    assert s["f1"][0] == pytest.approx(0.3) and s["f1"][1] == pytest.approx(0.1414, abs=1e-3)
    assert s["dice_small"] == (0.2, 0.0, 1)


def test_paired_differences_subtract_masks_only_of_the_same_seed(bench):
    def row(arm, seed, value):
        return {"arm": arm, "seed": seed, **{k: value for k in bench.METRIC_KEYS}, "report_cases": 0,
                "train_seconds": 1.0, "eval_seconds": 1.0}

    rows = [row("masks_only", 0, 0.5), row("masks_only", 1, 0.7), row("masks_only", 2, 0.1),
            row("masks_reports_truth", 0, 0.6), row("masks_reports_truth", 1, 0.6), row("masks_all", 0, 0.9)]
    d = bench.paired_differences(rows)
    assert d["masks_reports_truth"]["f1"][0] == pytest.approx(0.0)  # +0.1 on seed 0, -0.1 on seed 1; seed 2 unpaired
    assert d["masks_reports_truth"]["f1"][1] == pytest.approx(0.1414, abs=1e-3)
    assert d["masks_reports_truth"]["f1"][2:] == (2, 1)
    assert d["masks_all"]["dice"] == (pytest.approx(0.4), 0.0, 1, 1)
    assert "masks_reports_extracted" not in d
    md = bench.results_markdown(rows, {}, "results.png")
    assert "| masks_reports_truth | +0.000 ± 0.141 (1/2) |" in md and "| masks_all | +0.400 (1/1) |" in md


def test_minuscule_run_writes_one_entry_per_arm_and_seed(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    argv = ["--scale", "smoke", "--work-dir", str(tmp_path / "work"), "--results", str(tmp_path / "out/results.json"),
            "--seeds", "3", "--arms", "masks_only", "masks_reports_truth",
            "--set", "pool_cases=4", "--set", "mask_cases=2", "--set", "test_cases=3",
            "--set", "phantom_shape=[32,32,24]", "--set", "jobs=1",
            "--train-set", "optim.total_steps=2", "--train-set", "optim.warmup_steps=1",
            "--train-set", "data.patch_size=[16,16,16]"]
    entries = bench.main(argv)
    written = json.loads((tmp_path / "out/results.json").read_text())
    assert written == entries
    assert [(e["arm"], e["seed"]) for e in written] == [("masks_only", 3), ("masks_reports_truth", 3)]
    for e in written:
        assert set(bench.METRIC_KEYS) <= set(e)
        assert e["mask_cases"] == 2 and e["steps"] == 2
        assert 0.0 <= e["specificity"] <= 1.0 and 0.0 <= e["sensitivity"] <= 1.0
    assert written[0]["report_cases"] == 0 and written[1]["report_cases"] == 2
    assert (tmp_path / "out/results.md").read_text().count("masks_reports_truth") >= 3
    assert (tmp_path / "out/results.png").stat().st_size > 1000
    # A rerun reuses the finished runs instead of training again.
    (masks_only_result,) = (tmp_path / "work/runs").glob("masks_only_seed3_*/result.json")
    stamp = masks_only_result.stat().st_mtime_ns
    assert bench.main(argv) == entries
    assert masks_only_result.stat().st_mtime_ns == stamp
    # --report-only rewrites results.json from the finished runs, not from a stale file.
    (tmp_path / "out/results.json").write_text("[]")
    assert bench.main([*argv, "--report-only"]) == entries
    assert json.loads((tmp_path / "out/results.json").read_text()) == entries
    # --rescore predicts and scores again from the kept checkpoints, keeping the training time.
    train_seconds = [e["train_seconds"] for e in entries]
    rescored = bench.main([*argv, "--rescore"])
    assert masks_only_result.stat().st_mtime_ns != stamp
    assert [(e["arm"], e["seed"], e["train_seconds"]) for e in rescored] == [
        (e["arm"], e["seed"], t) for e, t in zip(entries, train_seconds)]
    assert [e["auroc"] for e in rescored] == [e["auroc"] for e in entries]
    entries, stamp = rescored, masks_only_result.stat().st_mtime_ns
    # A report-loss or report-schedule change keys the report arm anew (never resuming its checkpoint), not masks-only.
    changed = bench.main([*argv, "--train-set", "loss.ball_positive_fraction=0.4",
                          "--train-set", "optim.report_start_step=1"])
    assert changed[0] == entries[0] and changed[1]["fingerprint"] != entries[1]["fingerprint"]
    assert len(list((tmp_path / "work/runs").glob("masks_reports_truth_seed3_*/result.json"))) == 2
    assert masks_only_result.stat().st_mtime_ns == stamp


def test_extraction_cost_sums_the_stored_llm_time_of_every_shard(bench, tmp_path, monkeypatch):
    import asyncio

    monkeypatch.syspath_prepend(str(REPO / "tests" / "extract"))
    from llm_fakes import ANSWERS, KIDNEY_REPORT, LIVER_REPORT, ScriptedBackend, add_reports

    from extract.backends.base import Completion, SamplingConfig
    from extract.engine import EngineConfig, run_extraction
    from extract.prompting import load_prompt
    from extract.store import Store

    settings = bench.ScienceSettings.model_validate(
        {**bench.PRESETS["smoke"], "scale": "smoke", "work_dir": tmp_path, "extract_workers": 2})
    texts = [{"a": LIVER_REPORT}, {"b": KIDNEY_REPORT, "c": LIVER_REPORT + " "}]
    tokens, seconds = [60, 20, 10], [4.0, 2.5, 1.5]
    for path, shard in zip(bench.shard_stores(settings), texts):
        path.parent.mkdir(parents=True, exist_ok=True)
        with Store(path) as store:
            add_reports(store, shard)
            answers = [Completion(ANSWERS[t.strip()], "stop", 100, tokens.pop(), latency_s=seconds.pop())
                       for t in shard.values()]
            backend = ScriptedBackend(answers, max_concurrency=1)
            asyncio.run(run_extraction(store, backend, load_prompt(), SamplingConfig(), EngineConfig(progress=False)))
    cost = bench.extraction_cost(settings)
    assert cost["output_tokens_per_report"] == 30  # (10 + 20 + 60) / 3: both shards counted
    assert cost["llm_seconds"] == 8.0 and cost["llm_seconds_per_report"] == 2.7
