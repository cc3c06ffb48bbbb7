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
