import json
import math

import numpy as np
import pytest

from train.data.records import CaseRecords, ReportedTumor
from train.review.synthetic import ERROR_KINDS
from train.science.active import (active_markdown, audit_precision, corrupt, inject_errors, retrain_config,
                                  run_active_seed, summarise_active, write_active)
from train.science.protocol import PRESETS, ScienceSettings, settings_fingerprint


def _records(n: int) -> dict[str, CaseRecords]:
    """n reports of one sized liver tumour with pancreas and kidney normal: every error kind fits."""
    return {f"CT{i}": CaseRecords(f"R{i}", (ReportedTumor("liver", diameters_mm=(20.0 + i,)),),
                                  frozenset({"pancreas", "kidney"})) for i in range(n)}


def test_inject_errors_takes_a_tenth_cycles_the_kinds_and_corrupt_applies_them():
    records = _records(50)
    plan = inject_errors(records, 0.1, seed=3)
    assert len(plan) == 5 and list(plan.values()) == [*ERROR_KINDS[3:], *ERROR_KINDS[:3]]
    assert list(inject_errors(records, 0.08, seed=0).values()) == list(ERROR_KINDS[:4])
    assert plan == inject_errors(records, 0.1, seed=3) and plan != inject_errors(records, 0.1, seed=4)
    bad = corrupt(records, plan, seed=3)
    assert {ct for ct in records if bad[ct] != records[ct]} == set(plan)
    by_kind = {kind: bad[ct] for ct, kind in plan.items()}
    base = {kind: records[ct] for ct, kind in plan.items()}
    size = base["size_x10"].tumors[0].diameters_mm[0]
    assert by_kind["size_x10"].tumors[0].diameters_mm[0] == pytest.approx(10 * size)
    assert by_kind["left_out"].tumors == () and "liver" in by_kind["left_out"].lesion_free
    assert by_kind["wrong_organ"].tumors[0].organ in ("pancreas", "kidney")
    assert len(by_kind["normal_called_abnormal"].tumors) == 2


def test_inject_errors_skips_kinds_no_report_can_carry():
    # No tumour anywhere: only "a normal organ called abnormal" is possible.
    records = {f"CT{i}": CaseRecords(f"R{i}", (), frozenset({"liver", "pancreas", "kidney"})) for i in range(20)}
    assert set(inject_errors(records, 0.2, seed=0).values()) == {"normal_called_abnormal"}
    assert len(inject_errors(records, 0.2, seed=0)) == 4


def test_audit_precision_counts_the_injected_cts_in_the_top_k():
    rows = [{"ct_id": c, "score": s} for c, s in [("A", 9), ("B", 8), ("C", 7), ("D", 1), ("E", 0)]]
    p = audit_precision(rows, {"A": "size_x10", "D": "left_out"})
    assert (p["k"], p["cts"], p["precision_at_k"], p["chance"]) == (2, 5, 0.5, 0.4)
    assert p["per_kind"]["size_x10"] == {"injected": 1, "in_top_k": 1}
    assert p["per_kind"]["left_out"] == {"injected": 1, "in_top_k": 0} and p["missed"] == ["D:left_out"]


def test_round_settings_do_not_change_the_arms_fingerprint(make_settings):
    s = make_settings()
    assert settings_fingerprint(s) == settings_fingerprint(s.model_copy(update={"al_k": 9, "al_steps": 17,
                                                                                "al_error_fraction": 0.3}))
    al = ScienceSettings.model_validate({**PRESETS["al_cpu"], "scale": "al_cpu"})
    assert (al.al_k, al.al_error_fraction) == (4, 0.1)


def test_summary_gives_mean_std_min_max_of_the_paired_difference():
    def seed(s, d):
        p = {"k": 2, "precision_at_k": 0.5, "per_kind": {"size_x10": {"injected": 2, "in_top_k": 1}}}
        return {"seed": s, "difference": {k: d for k in ("dice", "dice_small", "auroc", "f1", "sensitivity",
                                                          "specificity", "f1_small", "sensitivity_small",
                                                          "specificity_small", "auroc_small")}, "precision": p}
    out = summarise_active([seed(0, 0.1), seed(1, -0.05), seed(2, 0.01)])
    d = out["difference"]["dice"]
    assert d["mean"] == pytest.approx(0.02) and d["std"] == pytest.approx(np.std([0.1, -0.05, 0.01], ddof=1))
    assert (d["min"], d["max"], d["wins"], d["n"]) == (-0.05, 0.1, 2, 3)
    assert out["precision_at_k_pooled"] == 0.5 and out["per_kind"]["size_x10"] == {"injected": 6, "in_top_k": 3}


@pytest.mark.slow
def test_one_round_chooses_the_audit_top_k_and_retrains_with_k_more_mask_cts(make_settings, tmp_path):
    from train.science.draws import ensure_pool, ensure_test
    from train.science.protocol import seed_mask_ids
    from train.science.runs import run_dir_of

    settings = make_settings(pool_cases=8, mask_cases=2, test_cases=4, phantom_shape=(48, 48, 32),
                             official_evaluate=False, al_k=2, al_steps=3,
                             train_overrides=["optim.total_steps=4", "optim.warmup_steps=1",
                                              "data.patch_size=[16,16,16]"])
    ensure_pool(settings)
    ensure_test(settings)
    fp = settings_fingerprint(settings)
    r = run_active_seed(settings, 0, fp)
    masks = seed_mask_ids(settings, 0)
    audited = [row["ct_id"] for row in r["audit"]]
    assert len(audited) == 8 - 2 and not set(audited) & masks  # every report CT, no mask CT
    top = [row["ct_id"] for row in sorted(r["audit"], key=lambda x: (-x["score"], x["ct_id"]))[:2]]
    assert r["disagreement"]["chosen"] == top
    rnd = r["random"]["chosen"]
    assert len(set(rnd)) == 2 and set(rnd) <= set(audited) and set(rnd) != set(top)
    for strategy in ("disagreement", "random"):
        assert (r[strategy]["mask_cases"], r[strategy]["report_cases"]) == (2 + 2, 8 - 2 - 2)
        assert all(0 <= r[strategy][k] <= 1 for k in ("dice", "auroc") if not math.isnan(r[strategy][k]))
    assert r["difference"]["dice"] == pytest.approx(r["disagreement"]["dice"] - r["random"]["dice"], nan_ok=True)
    # Both retrains start from the base run's weights with the same steps.
    base_ckpt = run_dir_of(settings, "masks_reports_truth", 0, fp)[0] / "train" / "latest.pt"
    config = retrain_config(settings, 0, base_ckpt, tmp_path / "x")
    assert config.init_from == base_ckpt and config.optim.total_steps == 3 and config.optim.report_start_step == 0
    # The precision audit: the base network's pool report CTs and test CTs, one error in a tenth of them.
    p = r["precision"]
    assert p["cts"] == 6 + 4 and p["k"] == 1 and len(p["injected"]) == 1
    assert list(p["injected"].values())[0] in ERROR_KINDS
    scored = sorted((settings.work_dir / "active").glob("seed0_*/error_audit/scored/*/probabilities.nii.gz"))
    assert len(scored) == 6 + 4  # audited with lesion probabilities, which weigh the predicted lesions
    # A second call reuses the round; the report files hold it.
    assert run_active_seed(settings, 0, fp)["random"]["chosen"] == rnd
    out = tmp_path / "active.json"
    write_active(out, [r], {"scale": "test"})
    assert json.loads(out.read_text())["seeds"][0]["disagreement"]["chosen"] == top
    assert "| 0 |" in active_markdown([r], {"scale": "test"})


def test_a_retrain_folder_is_kept_only_for_the_choice_it_was_trained_on(tmp_path):
    from train.science.active import _start_over_unless_chosen

    run = tmp_path / "disagreement"
    _start_over_unless_chosen(run, ["a", "b"], None)
    (run / "train").mkdir()
    (run / "train" / "latest.pt").write_text("weights of a, b")
    _start_over_unless_chosen(run, ["a", "b"], None)
    assert (run / "train" / "latest.pt").is_file()  # same choice: resumed or reused
    _start_over_unless_chosen(run, ["a", "c"], None)
    assert not (run / "train").exists() and json.loads((run / "chosen.json").read_text()) == ["a", "c"]
    # a round from before chosen.json: the choice recorded in its active.json decides
    old = tmp_path / "random"
    (old / "train").mkdir(parents=True)
    _start_over_unless_chosen(old, ["x"], ["x"])
    assert (old / "train").is_dir()
    _start_over_unless_chosen(old, ["y"], ["x"])
    assert not (old / "train").exists()
