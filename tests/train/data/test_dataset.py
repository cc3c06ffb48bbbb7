import dataclasses

import numpy as np
import pytest

from train.data.cache import ensure_cached
from train.data.cases import build_cases, training_cases
from train.data.dataset import CaseDataset, DataConfig, MixedBatchSampler, build_sample, collate, group_box
from train.data.labels import load_label_names
from train.data.records import records_from_ground_truth
from train.data.sampler import extract_patch, feasible_start_range, start_containing
from train.data.supervision import build_supervision


@pytest.fixture(scope="module")
def cases(phantom_set):
    table = build_cases(phantom_set, phantom_set / "case_reports.csv").table
    rec = records_from_ground_truth(phantom_set / "ground_truth.jsonl")
    out = training_cases(table, rec, load_label_names(phantom_set / "labels.json"),
                         load_label_names(phantom_set / "lesion_labels.json"), split=None, report_only_fraction=0.6,
                         seed=1)
    assert any(c.has_mask for c in out) and any(not c.has_mask for c in out)
    return out


def test_start_containing_always_contains_the_box():
    rng = np.random.default_rng(0)
    for _ in range(500):
        shape = tuple(rng.integers(20, 80, 3))
        lo = np.array([rng.integers(0, s) for s in shape])
        hi = np.minimum(lo + rng.integers(0, 25, 3), np.array(shape) - 1)
        start = start_containing(rng, lo, hi, shape, (32, 32, 32), np.array([3, 3, 3]))
        assert start is not None and np.all(start <= lo) and np.all(start + 32 > hi)
    assert feasible_start_range(np.array([0, 0, 0]), np.array([40, 5, 5]), (50, 50, 50), (32, 32, 32),
                                np.zeros(3)) is None


def test_extract_patch_pads_outside():
    a = np.arange(27).reshape(3, 3, 3)
    p = extract_patch(a, np.array([-1, 0, 0]), (2, 2, 2), fill=-5)
    assert (p[0] == -5).all() and p[1, 0, 0] == 0


def test_sampler_keeps_the_chosen_group_inside(phantom_set, cases):
    config = DataConfig(patch_size=(32, 32, 24), random_crop_probability=0.0, intensity_augmentation=False)
    chosen = 0
    for case in (c for c in cases if not c.has_mask):
        cached = ensure_cached(phantom_set / "cache", case.files, config.preprocess)
        sup = build_supervision(case.records, frozenset(cached.meta["available_labels"]))
        for seed in range(10):
            s = build_sample(cached, case, config, np.random.default_rng(seed))
            if s["chosen_group"] is None:
                continue
            chosen += 1
            lo, hi = group_box(sup.groups[s["chosen_group"]], cached.meta["label_boxes"])
            assert np.all(s["crop_start"] <= lo) and np.all(s["crop_start"] + np.array(config.patch_size) > hi)
            states = [g["state"] for g in s["groups"]]
            assert 1 in states  # the chosen lesion group is supervised in the crop
    assert chosen > 0


def test_batch_contract(phantom_set, cases):
    config = DataConfig(patch_size=(32, 32, 24), mask_fraction=0.5)
    ds = CaseDataset(cases, phantom_set / "cache", config)
    sampler = MixedBatchSampler(cases, batch_size=4, batches=3, mask_fraction=0.5, seed=3)
    for batch_items in sampler:
        batch = collate([ds[i] for i in batch_items])
        assert batch["has_mask"].sum().item() == 2
        t = batch["targets"]
        t.validate()
        assert batch["labels"].shape == (4, len(config.classes), 32, 32, 24)
        assert batch["unknown_mask"].shape == batch["labels"].shape and batch["image_hu"].shape == (4, 1, 32, 32, 24)
        lesion_c = [config.classes.index(n) for n in ("liver_lesion", "pancreas_lesion", "kidney_lesion")]
        for i in range(4):
            if batch["has_mask"][i]:
                assert t.group_state[i].eq(0).all() and not batch["unknown_mask"][i].any()
            else:
                assert not batch["labels"][i, lesion_c].any()  # report cases have no lesion labels
                for j in range(t.num_groups):
                    if t.group_state[i, j] == 1:  # a lesion group is unknown for the ordinary loss
                        assert batch["unknown_mask"][i, t.group_channel[i, j]][t.group_masks[i, j]].all()
        known = t.tumor_size_known
        assert (t.tumor_volume_mm3[known] > 0).all() and (t.tumor_group[known] >= 0).all()
        assert np.allclose(t.spacing_mm.numpy()[0], ds.cached(batch_items[0][0]).spacing_mm)


def test_dilate_box_matches_scipy_maximum_filter():
    from scipy import ndimage

    from train.data.dataset import dilate_box

    rng = np.random.default_rng(4)
    for radius in [(0, 0, 0), (1, 2, 3), (2, 0, 1), (4, 4, 4), (9, 1, 0)]:
        mask = rng.random((11, 9, 7)) < 0.03
        expected = ndimage.maximum_filter(mask.view(np.uint8), size=[2 * r + 1 for r in radius]).astype(bool)
        got = dilate_box(mask, radius)
        assert np.array_equal(got, expected), radius
        assert got.sum() >= mask.sum()


def _monai_augmentation(image, seed: int, p: float):
    """The augmentation as written with MONAI's random transforms (the reference)."""
    import torch
    from monai.transforms import RandAdjustContrast, RandScaleIntensity, RandShiftIntensity
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    if rng.random() < p:
        image = torch.from_numpy(ndimage.gaussian_filter(image.numpy(), sigma=(0, *rng.uniform(0.5, 1.5, 3))))
    for transform in (RandScaleIntensity(factors=0.3, prob=1.0), RandShiftIntensity(offsets=0.1, prob=1.0),
                      RandAdjustContrast(gamma=(0.7, 1.5), prob=1.0)):
        if rng.random() < p:
            transform.set_random_state(seed=int(rng.integers(2**31)))
            image = torch.as_tensor(transform(image)).as_subclass(torch.Tensor)
    if rng.random() < p:
        image = image + torch.from_numpy(rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(0.0, 0.2))
    return image.float()


@pytest.mark.parametrize("p", [1.0, 0.5])
def test_intensity_augmentation_matches_monai_transforms(p):
    import torch

    from train.data.dataset import IntensityAugmentation

    image = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 12, 10, 8)).astype(np.float32))
    augment = IntensityAugmentation(p)
    changed = 0
    for seed in range(8):
        got = augment(image, seed)
        assert got.dtype == torch.float32 and torch.equal(got, _monai_augmentation(image, seed, p))
        changed += not torch.equal(got, image)
    assert changed >= 4


def test_collate_paints_what_build_sample_builds(phantom_set, cases):
    import torch

    config = DataConfig(patch_size=(32, 32, 24), intensity_augmentation=False, unknown_margin_mm=7.0)
    ds = CaseDataset(cases, phantom_set / "cache", config)
    items = [(i, seed) for i in range(len(cases)) for seed in (5, 6)]
    batch = collate([ds[item] for item in items])
    t = batch["targets"]
    grown = 0
    for b, (index, seed) in enumerate(items):
        s = build_sample(ds.cached(index), cases[index], config, np.random.default_rng([seed, index]))
        for key in ("image", "image_hu", "labels", "unknown_mask"):
            assert np.array_equal(batch[key][b].numpy(), s[key]), key
        assert len(s["groups"]) == int((t.group_channel[b] >= 0).sum())
        for j, g in enumerate(s["groups"]):
            assert np.array_equal(t.group_masks[b, j].numpy(), g["mask"])
            assert (t.group_channel[b, j].item(), t.group_state[b, j].item()) == (g["channel"], g["state"])
        grown += any(0 < u.sum() < u.size for u in s["unknown_mask"])
    assert grown > 0  # some report crop had a grown (partial) unknown region
    assert batch["image"].dtype == torch.float32 and batch["labels"].dtype == torch.bool


def test_batch_is_sent_compact_and_rebuilt(phantom_set, cases):
    import pickle

    import torch

    from train.data.dataset import BATCH_KEYS, Batch

    config = DataConfig(patch_size=(32, 32, 24))
    ds = CaseDataset(cases, phantom_set / "cache", config)
    sampler = MixedBatchSampler(cases, batch_size=2, batches=2, mask_fraction=0.5, seed=9)
    expected = [collate([ds[i] for i in items]) for items in sampler]
    sampler.epoch = 0
    sent = pickle.dumps(collate([ds[i] for i in next(iter(sampler))]))
    dense = sum(expected[0][k].numel() * expected[0][k].element_size() for k in ("labels", "unknown_mask"))
    assert len(sent) < dense / 3
    sampler.epoch = 0
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=1)
    for got, want in zip(loader, expected):
        assert isinstance(got, Batch) and tuple(got) == BATCH_KEYS
        for key in ("image", "image_hu", "labels", "unknown_mask", "has_mask"):
            assert torch.equal(got[key], want[key]), key
        assert torch.equal(got["targets"].group_masks, want["targets"].group_masks)
        rebuilt = Batch(dict(got.items()))  # how DataLoader's pin_memory rebuilds a mapping
        assert rebuilt["labels"] is got["labels"]


def test_foreground_draw_balances_lesion_classes():
    from train.data.cache import CachedCase
    from train.data.dataset import _balanced_foreground_index

    lesions = np.zeros((20, 20, 20), np.uint8)
    lesions[:10, :10, :10] = 1  # a large liver tumour: 1,000 voxels
    lesions[15, 15, 15:17] = 3  # a tiny kidney tumour: 2 voxels
    fg = np.argwhere(lesions > 0).astype(np.int32)
    blank = np.zeros_like(lesions)
    cached = CachedCase(image=blank, labels=blank, lesions=lesions, foreground=fg, meta={})
    rng = np.random.default_rng(0)
    drawn = [lesions[tuple(fg[_balanced_foreground_index(rng, cached)])] for _ in range(2000)]
    assert 0.45 < np.mean(np.asarray(drawn) == 3) < 0.55  # uniform voxels would give 0.2 %
    assert [len(m) for m in cached.foreground_by_lesion] == [1000, 2]
    organ_only = CachedCase(image=blank, labels=blank, lesions=None, foreground=fg, meta={})
    assert all(0 <= _balanced_foreground_index(rng, organ_only) < len(fg) for _ in range(50))


def test_mirrored_sample_is_the_flipped_sample(phantom_set, cases):
    import torch

    from train.data.dataset import mirror_plan, normalise_image, plan_sample

    config = DataConfig(patch_size=(32, 32, 24), intensity_augmentation=False, unknown_margin_mm=7.0)
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


def test_dataset_mirrors_about_half_of_the_crops_per_axis(phantom_set, cases):
    config = DataConfig(patch_size=(32, 32, 24), intensity_augmentation=False, mirror_axes=(1,))
    plain = CaseDataset(cases, phantom_set / "cache", config.model_copy(update={"mirror_axes": ()}))
    mirrored = CaseDataset(cases, phantom_set / "cache", config)
    flips = 0
    for seed in range(40):
        a, b = plain[(0, seed)]["plan"], mirrored[(0, seed)]["plan"]
        if not np.array_equal(a.hu, b.hu):
            assert np.array_equal(b.hu, a.hu[:, ::-1, :]) and np.array_equal(b.labels, a.labels[:, ::-1, :])
            flips += 1
    assert 10 <= flips <= 30


def test_mirroring_left_right_is_refused_for_sided_channels():
    with pytest.raises(ValueError, match="kidney_left"):
        DataConfig(classes=("liver", "kidney_left", "kidney_right"), mirror_axes=(0, 2))
    assert DataConfig(classes=("liver", "kidney_left"), mirror_axes=(1, 2)).mirror_axes == (1, 2)
    with pytest.raises(ValueError, match="distinct axes"):
        DataConfig(mirror_axes=(3,))


def test_report_ct_tumours_are_never_supervised_as_background(phantom_set, cases, tmp_path):
    """A tumour centred in its reported sub-segment may reach into the next one or out of the organ: the lesion
    channel's unknown region grows by the reported radius, so none of its voxels is a known negative."""
    from train.data.dataset import plan_sample, paint_masks

    # No fixed margin: the reported radius alone must cover what the tumour has outside its sub-segment.
    config = DataConfig(patch_size=(32, 32, 24), random_crop_probability=0.0, intensity_augmentation=False,
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
