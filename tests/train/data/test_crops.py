import numpy as np

from train.data.cache import ensure_cached
from train.data.config import PatchDatasetConfig
from train.data.crops import group_box
from train.data.dataset import build_sample
from train.data.supervision import build_supervision


def test_report_crop_keeps_the_chosen_group_inside(phantom_set, cases):
    config = PatchDatasetConfig(patch_size=(32, 32, 24), random_crop_probability=0.0, intensity_augmentation=False)
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


def test_foreground_draw_balances_lesion_classes():
    from train.data.cache import CachedCase
    from train.data.crops import _balanced_foreground_index

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
