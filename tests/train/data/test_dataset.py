import numpy as np

from train.data.config import PatchDatasetConfig
from train.data.dataset import CaseDataset


def test_dataset_mirrors_about_half_of_the_crops_per_axis(phantom_set, cases):
    config = PatchDatasetConfig(patch_size=(32, 32, 24), intensity_augmentation=False, mirror_axes=(1,))
    plain = CaseDataset(cases, phantom_set / "cache", config.model_copy(update={"mirror_axes": ()}))
    mirrored = CaseDataset(cases, phantom_set / "cache", config)
    flips = 0
    for seed in range(40):
        a, b = plain[(0, seed)]["plan"], mirrored[(0, seed)]["plan"]
        if not np.array_equal(a.hu, b.hu):
            assert np.array_equal(b.hu, a.hu[:, ::-1, :]) and np.array_equal(b.labels, a.labels[:, ::-1, :])
            flips += 1
    assert 10 <= flips <= 30
