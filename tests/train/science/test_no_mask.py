"""The no-mask protocol: a held-out organ's lesions unannotated in the mask CTs, per-organ scoring, the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from train.science.no_mask import results_path, summarise_no_mask, write_no_mask
from train.science.protocol import PoolCase, arm_cases, run_dir_of, run_fingerprint, seed_mask_ids, unannotate_lesions


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from train.data.phantoms import PhantomConfig, write_phantom_set

    out = tmp_path_factory.mktemp("pool")
    write_phantom_set(out, PhantomConfig(n=6, seed=21, shape=(48, 48, 32), tumor_count_probabilities=(0, 0, 0, 1),
                                         small_lesion_probability=0.0))
    return out


def _truth(pool):
    from train.science.draws import read_truth

    return read_truth(pool)


def _case_with(pool, organs: set[str]) -> PoolCase:
    from train.science.protocol import pool_cases

    truth = {ct: {t["organ"] for t in row["tumors"]} for ct, row in _truth(pool).items()}
    return next(c for c in pool_cases(pool) if organs <= truth[c.files.ct_id])


def test_unannotated_organ_trains_on_nothing_in_a_mask_crop(pool, tmp_path):
    """Its tumour voxels are neither lesion nor known background; the other organs' lesions stay annotated."""
    from train.data.cache import ensure_cached
    from train.data.cases import TrainingCase
    from train.data.config import PatchDatasetConfig
    from train.data.labels import lesion_code
    from train.data.painting import paint_masks
    from train.data.sample_plan import plan_sample

    case = _case_with(pool, {"pancreas", "liver"})
    files = unannotate_lesions(case.files, "pancreas")
    assert "pancreas_lesion" not in files.lesion_label_names.values()
    assert "liver_lesion" in files.lesion_label_names.values()
    config = PatchDatasetConfig(patch_size=(32, 32, 24), intensity_augmentation=False)
    full = ensure_cached(tmp_path, case.files, config.preprocess)
    held = ensure_cached(tmp_path, files, config.preprocess)
    assert full.meta["lesion_organs"] == ["kidney", "liver", "pancreas"]
    assert held.meta["lesion_organs"] == ["kidney", "liver"]
    assert (np.asarray(full.lesions) == lesion_code("pancreas")).any()
    assert not (np.asarray(held.lesions) == lesion_code("pancreas")).any()
    liver_voxels = int((np.asarray(full.lesions) == lesion_code("liver")).sum())
    assert liver_voxels > 0 and int((np.asarray(held.lesions) == lesion_code("liver")).sum()) == liver_voxels

    channel = {name: c for c, name in enumerate(config.classes)}
    for seed in range(4):
        plan = plan_sample(held, TrainingCase(files, None), config, np.random.default_rng(seed))
        labels = np.zeros((plan.num_channels, *plan.labels.shape), bool)
        unknown = np.zeros_like(labels)
        paint_masks(plan, labels, unknown, np.zeros((len(plan.groups), *plan.labels.shape), bool))
        assert unknown[channel["pancreas_lesion"]].all() and not labels[channel["pancreas_lesion"]].any()
        assert not unknown[channel["liver_lesion"]].any()


def test_unannotating_an_organ_the_mask_lacks_is_an_error(pool):
    case = _case_with(pool, {"liver"})
    renamed = unannotate_lesions(case.files, "liver")
    with pytest.raises(ValueError, match=f"{case.files.ct_id}.*no liver_lesion"):
        unannotate_lesions(renamed, "liver")


def test_arm_cases_unannotate_the_mask_cts_of_every_arm_but_masks_all(pool):
    from train.science.protocol import pool_cases

    base = pool_cases(pool)
    mask_ids = {base[0].files.ct_id}
    records = {c.report_id: f"record of {c.report_id}" for c in base}
    for arm, mask_record in (("masks_only", None), ("masks_reports_truth", f"record of {base[0].report_id}")):
        cases, _ = arm_cases(arm, base, mask_ids, records, unannotated_organ="kidney")
        masked = [c for c in cases if c.has_mask]
        assert [c.files.ct_id for c in masked] == [base[0].files.ct_id]
        assert "kidney_lesion" not in masked[0].files.lesion_label_names.values()
        assert masked[0].records == mask_record  # the report arm's mask CT reports on the kidney
    mixed, _ = arm_cases("masks_reports_truth", base, mask_ids, records)
    assert [c.records for c in mixed if c.has_mask] == [None]
    everything, _ = arm_cases("masks_all", base, mask_ids, records, unannotated_organ="kidney")
    assert all("kidney_lesion" in c.files.lesion_label_names.values() for c in everything)


def test_mask_draw_covers_the_other_organs_and_runs_are_keyed_by_the_held_out_organ(make_settings, pool):
    import shutil

    from train.config import TrainConfig

    settings = make_settings(pool_cases=6, mask_cases=2)
    shutil.copytree(pool, settings.work_dir / "pool")
    truth = {ct: {t["organ"] for t in row["tumors"]} for ct, row in _truth(pool).items()}
    for organ in ("pancreas", "kidney", "liver"):
        held = settings.model_copy(update={"no_mask_organ": organ})
        ids = seed_mask_ids(held, 0)
        assert len(ids) == 2
        assert {"pancreas", "kidney", "liver"} - {organ} <= set().union(*(truth[i] for i in ids))
        assert run_dir_of(held, "masks_only", 0, "fp") != run_dir_of(settings, "masks_only", 0, "fp")
        assert run_dir_of(held, "masks_all", 0, "fp") == run_dir_of(settings, "masks_all", 0, "fp")
    config = TrainConfig()
    assert run_fingerprint("f", config, {"A"}, "pancreas") != run_fingerprint("f", config, {"A"}, "kidney")


def test_per_organ_metrics_score_each_organ_alone():
    from train.evaluate import per_organ_metrics

    def summary(liver_p, pancreas_p, liver_mm3=0.0):
        return {"organs": {"liver": {"lesion_volume_mm3": liver_mm3, "max_probability": liver_p},
                           "pancreas": {"lesion_volume_mm3": 0.0, "max_probability": pancreas_p}}}

    summaries = {"A": summary(0.9, 0.2, 500.0), "B": summary(0.4, 0.8), "C": summary(0.6, 0.1), "D": summary(0.1, 0.3)}
    truth = {"A": {"tumors": [{"organ": "liver"}]}, "B": {"tumors": [{"organ": "pancreas"}]},
             "C": {"tumors": [{"organ": "liver"}, {"organ": "pancreas"}]}, "D": {"tumors": []}}
    dice = {"A": {"liver_lesion": 0.5}, "B": {"pancreas_lesion": 0.2},
            "C": {"liver_lesion": 0.1, "pancreas_lesion": 0.0}}
    out = per_organ_metrics(summaries, truth, dice, threshold_mm3=100.0)
    # liver: positives A (0.9), C (0.6) against B (0.4), D (0.1): every pair ordered
    assert out["liver"]["auroc"] == 1.0 and out["liver"]["n_positive"] == 2
    assert out["liver"]["sensitivity"] == 0.5 and out["liver"]["specificity"] == 1.0
    assert out["liver"]["dice"] == pytest.approx(0.3)
    # pancreas: positives B (0.8), C (0.1) against A (0.2), D (0.3): 2 of 4 pairs ordered
    assert out["pancreas"]["auroc"] == 0.5
    assert out["pancreas"]["dice"] == pytest.approx(0.1)  # C has a pancreas tumour and no pancreas overlap: Dice 0


def _entry(arm, seed, held, pancreas_dice, liver_dice=0.4, auroc=0.7):
    organ = {"f1": 0.5, "sensitivity": 0.5, "specificity": 0.5, "n_positive": 3, "n_negative": 3}
    return {"arm": arm, "seed": seed, "no_mask_organ": None if arm == "masks_all" else held, "train_seconds": 1.0,
            "organs": {"pancreas": {**organ, "auroc": auroc, "dice": pancreas_dice},
                       "liver": {**organ, "auroc": 0.8, "dice": liver_dice}}}


def test_report_pairs_the_held_out_dice_with_the_control(tmp_path):
    by_organ = {"pancreas": [_entry("masks_only", 0, "pancreas", 0.0), _entry("masks_only", 1, "pancreas", 0.0),
                             _entry("masks_reports_truth", 0, "pancreas", 0.2),
                             _entry("masks_reports_truth", 1, "pancreas", 0.3),
                             _entry("masks_all", 0, "pancreas", 0.4), _entry("masks_all", 1, "pancreas", 0.5)]}
    s = summarise_no_mask(by_organ)["pancreas"]
    mean, std, n = s["dice_ratio"]
    assert (mean, n) == (pytest.approx((0.5 + 0.6) / 2), 2) and std == pytest.approx(np.std([0.5, 0.6], ddof=1))
    assert s["masks_reports_truth"]["pancreas"]["dice"][0] == pytest.approx(0.25)
    assert s["masks_only"]["liver"]["auroc"] == (0.8, 0.0, 2)
    path = results_path(tmp_path / "results_cpu.json")
    assert path.name == "results_cpu_no_mask.json"
    write_no_mask(path, by_organ, [_entry("masks_reports_truth", 0, None, 0.45, liver_dice=0.6)], {"scale": "t"})
    md = path.with_suffix(".md").read_text()
    assert "## No pancreas masks" in md and "0.550 ± 0.071" in md
    assert "| mixed | 0.800 / 0.600 |" in md
    assert json.loads(path.read_text())["held_out"]["pancreas"][2]["organs"]["pancreas"]["dice"] == 0.2
    assert math.isnan(summarise_no_mask({"kidney": [_entry("masks_only", 0, "kidney", 0.0)]})["kidney"]
                      ["dice_ratio"][0])


def test_the_no_mask_recipe_changes_the_report_arms_of_that_protocol_only(make_settings, tmp_path):
    from train.science.protocol import arm_config

    mixed = make_settings()
    for organ in ("liver", "kidney"):
        held = mixed.model_copy(update={"no_mask_organ": organ})
        report = arm_config(held, "masks_reports_truth", 0, tmp_path / organ)
        channel = report.data.classes.index(f"{organ}_lesion")
        # the held-out channel: class-balanced Ball BCE, report losses from step 0; the others: the mixed recipe
        assert report.loss.report_early_channels == [channel] and channel in report.loss.lesion_channels
        assert report.loss.ball_normalization(channel) == "class"
        assert (report.loss.ball_bce_normalization, report.optim.report_start_step) == ("crop", 900)
    for settings, arm in ((mixed, "masks_reports_truth"), (held, "masks_only"), (held, "masks_all")):
        config = arm_config(settings, arm, 0, tmp_path / arm)
        assert (config.loss.ball_bce_normalization, config.optim.report_start_step) == ("crop", 900)
        assert config.loss.report_early_channels == []
    own = held.model_copy(update={"train_overrides": ["optim.report_start_step=300"]})
    assert arm_config(own, "masks_reports_truth", 0, tmp_path / "o").optim.report_start_step == 300
    # the earlier recipe, every channel from step 0 and class balanced, is one setting away
    every = held.model_copy(update={"no_mask_report_overrides": ["loss.ball_bce_normalization=class",
                                                                  "optim.report_start_step=0"]})
    config = arm_config(every, "masks_reports_truth", 0, tmp_path / "e")
    assert (config.loss.ball_bce_normalization, config.optim.report_start_step) == ("class", 0)
