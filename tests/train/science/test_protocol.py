"""The science benchmark's protocol: training slots, run fingerprints, per-arm cases and configs."""

from __future__ import annotations

import pytest

from train.science.protocol import (ARMS, MASK_ARMS, PRESETS, PoolCase, ScienceSettings, arm_cases, arm_config,
                                    run_fingerprint, training_slots)


def test_fewer_runs_train_while_the_llm_extracts(make_settings):
    settings = make_settings(jobs=3, extract_workers=1)
    assert training_slots(settings, extraction_running=True) == 2
    assert training_slots(settings, extraction_running=False) == 3
    assert training_slots(make_settings(jobs=1, extract_workers=2), extraction_running=True) == 1


def test_run_fingerprint_covers_the_mask_cts():
    from train.config import TrainConfig

    config = TrainConfig()
    base = run_fingerprint("f", config)
    assert run_fingerprint("f", config, {"A", "B"}) == run_fingerprint("f", config, {"B", "A"}) != base
    assert run_fingerprint("f", config, {"A", "C"}) != run_fingerprint("f", config, {"A", "B"})


def test_arm_cases_masks_all_keeps_every_mask_and_report_arms_drop_unrecorded_ones():
    from train.data.cache import CaseFiles

    def pool_case(i):
        files = CaseFiles(f"CT{i}", f"ct{i}.nii.gz", f"organs{i}.nii.gz", f"lesions{i}.nii.gz", f"sha{i}", {}, None)
        return PoolCase(files, f"R{i}")

    base = [pool_case(i) for i in range(4)]
    records = {"R1": "record of R1", "R2": "record of R2"}  # R3 has none (extraction failed)
    only, dropped = arm_cases("masks_only", base, {"CT0"}, records)
    assert [(c.files.ct_id, c.has_mask) for c in only] == [("CT0", True)] and dropped == 0
    everything, dropped = arm_cases("masks_all", base, {"CT0"}, records)
    assert [(c.files.ct_id, c.has_mask, c.records) for c in everything] == [(f"CT{i}", True, None) for i in range(4)]
    assert dropped == 0
    reports, dropped = arm_cases("masks_reports_truth", base, {"CT0"}, records)
    assert [(c.files.ct_id, c.has_mask, c.records) for c in reports] == [
        ("CT0", True, None), ("CT1", False, "record of R1"), ("CT2", False, "record of R2")]
    assert dropped == 1


@pytest.mark.parametrize("scale", ["cpu", "gpu"])
def test_every_arm_gets_the_same_mask_crops_per_step(tmp_path, scale):
    settings = ScienceSettings.model_validate({**PRESETS[scale], "scale": scale, "work_dir": tmp_path})
    configs = {arm: arm_config(settings, arm, 0, tmp_path / arm) for arm in ARMS}
    report = configs["masks_reports_truth"].data
    mask_crops = round(report.batch_size * report.mask_fraction)
    assert report.batch_size > mask_crops >= 1
    for arm in MASK_ARMS:
        c = configs[arm]
        assert (c.data.batch_size, c.data.mask_fraction, c.loss.report_weight) == (mask_crops, 1.0, 0.0)
    assert configs["masks_reports_extracted"].data.records == "store" and report.records == "truth"
    odd = settings.model_copy(update={"train_overrides": ["data.mask_fraction=0.7"]})
    with pytest.raises(ValueError, match="whole number"):
        arm_config(odd, "masks_all", 0, tmp_path / "odd")


def test_gpu_scale_network_runs_on_its_patch_grid(tmp_path):
    import torch

    from train.model import build_network

    settings = ScienceSettings.model_validate({**PRESETS["gpu"], "scale": "gpu", "work_dir": tmp_path})
    config = arm_config(settings, "masks_reports_truth", 0, tmp_path / "run")
    assert tuple(config.data.patch_size) == (96, 96, 96) and config.optim.total_steps == 4000
    net = build_network(config.model, 1, len(config.data.classes)).eval()
    with torch.no_grad():  # a 32^3 crop: the same strides as 96^3, a fraction of the CPU time
        out = net(torch.zeros(1, 1, 32, 32, 32))
    assert out.shape == (1, len(config.data.classes), 32, 32, 32)
