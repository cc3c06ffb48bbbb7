import dataclasses

import numpy as np

from train.data.batching import collate
from train.data.cache import ensure_cached
from train.data.config import PatchDatasetConfig
from train.data.dataset import CaseDataset
from train.data.labels import load_label_names
from train.data.placement import extract_patch


def test_mirrored_sample_is_the_flipped_sample(phantom_set, cases):
    import torch

    from train.data.intensity import normalise_image
    from train.data.sample_plan import mirror_plan, plan_sample

    config = PatchDatasetConfig(patch_size=(32, 32, 24), intensity_augmentation=False, unknown_margin_mm=7.0)
    ds = CaseDataset(cases, phantom_set / "cache", config)

    def item(plan, cached):
        image = torch.from_numpy(normalise_image(plan.hu, config, cached.meta)[None])
        return {"ct_id": plan.ct_id, "image": image, "plan": plan}

    groups = 0
    for index in range(len(cases)):
        cached = ds.cached(index)
        plan = plan_sample(cached, cases[index], config, np.random.default_rng([3, index]))
        for axes in ((0,), (1, 2), (0, 1, 2)):
            plain, mirrored = collate([item(plan, cached)]), collate([item(mirror_plan(plan, axes), cached)])
            dims = tuple(a + 2 for a in axes)  # after the batch and channel dimensions
            for key in ("image", "image_hu", "labels", "unknown_mask"):
                assert torch.equal(mirrored[key], torch.flip(plain[key], dims)), key
            assert torch.equal(mirrored["targets"].group_masks, torch.flip(plain["targets"].group_masks, dims))
            groups += int(plain["targets"].group_masks.any())
    assert groups > 0


def test_report_ct_tumours_are_never_supervised_as_background(phantom_set, cases, tmp_path):
    """A tumour centred in its reported sub-segment may reach into the next one or out of the organ: the lesion
    channel's unknown region grows by the reported radius, so none of its voxels is a known negative."""
    from train.data.painting import paint_masks
    from train.data.sample_plan import plan_sample

    # No fixed margin: the reported radius alone must cover what the tumour has outside its sub-segment.
    config = PatchDatasetConfig(patch_size=(32, 32, 24), random_crop_probability=0.0, intensity_augmentation=False,
                        unknown_margin_mm=0.0)
    lesion_codes = {name: code for code, name in load_label_names(phantom_set / "lesion_labels.json").items()}
    checked = 0
    for case in (c for c in cases if not c.has_mask):
        cached = ensure_cached(phantom_set / "cache", case.files, config.preprocess)
        lesion_path = phantom_set / "cases" / case.files.ct_id / "lesions.nii.gz"  # the truth a report CT hides
        truth = ensure_cached(tmp_path, dataclasses.replace(case.files, lesion_mask_path=lesion_path),
                              config.preprocess)
        for seed in range(6):
            plan = plan_sample(cached, case, config, np.random.default_rng(seed))
            labels = np.zeros((plan.num_channels, *plan.labels.shape), bool)
            unknown = np.zeros_like(labels)
            paint_masks(plan, labels, unknown, np.zeros((len(plan.groups), *plan.labels.shape), bool))
            lesions = extract_patch(truth.lesions, plan.crop_start, config.patch_size, fill=0)
            for c, name in enumerate(config.classes):
                if name in lesion_codes:
                    tumour = lesions == lesion_codes[name]
                    assert not (tumour & ~unknown[c]).any(), (case.files.ct_id, seed, name)
                    checked += int(tumour.any())
    assert checked > 0


def test_a_mask_ct_takes_the_lesions_its_mask_leaves_out_from_its_report(phantom_set, cases, tmp_path):
    """A lesion mask without liver lesions (a dataset that never annotated them): the report supervises the
    liver-lesion channel of that CT's crops, the mask every other lesion channel; without a report the channel
    is unknown."""
    from train.data.painting import paint_masks
    from train.data.records import records_from_ground_truth
    from train.data.sample_plan import plan_sample
    from train.science.protocol import unannotate_lesions

    config = PatchDatasetConfig(patch_size=(56, 56, 40), random_crop_probability=0.0, intensity_augmentation=False)
    channel = {name: c for c, name in enumerate(config.classes)}
    truth = records_from_ground_truth(phantom_set / "ground_truth.jsonl")
    case = next(c for c in cases if any(t.organ == "liver" for t in truth[c.records.report_id].tumors))
    mask = str(phantom_set / "cases" / case.files.ct_id / "lesions.nii.gz")
    files = unannotate_lesions(dataclasses.replace(case.files, lesion_mask_path=mask), "liver")
    cached = ensure_cached(tmp_path, files, config.preprocess)
    with_report = plan_sample(cached, dataclasses.replace(case, files=files), config, np.random.default_rng(0))
    without = plan_sample(cached, dataclasses.replace(case, files=files, records=None), config,
                          np.random.default_rng(0))
    assert without.unknown_all[channel["liver_lesion"]] and not without.groups
    assert not with_report.unknown_all[channel["liver_lesion"]]
    assert {g.channel for g in with_report.groups} == {channel["liver_lesion"]}  # the mask keeps the rest
    assert [g.state for g in with_report.groups] == [1]
    for c in (channel["pancreas_lesion"], channel["kidney_lesion"]):
        assert with_report.lesion_code[c] is not None and with_report.lesion_code[c] == without.lesion_code[c]
    labels = np.zeros((with_report.num_channels, *with_report.labels.shape), bool)
    unknown = np.zeros_like(labels)
    groups = np.zeros((len(with_report.groups), *with_report.labels.shape), bool)
    paint_masks(with_report, labels, unknown, groups)
    held = unknown[channel["liver_lesion"]]
    assert held.any() and not held.all()  # the reported organ (grown) is unknown, the rest known background
    assert not labels[channel["liver_lesion"]].any() and groups[0].any()
