import numpy as np
import pytest


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

    from train.data.intensity import IntensityAugmentation

    image = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 12, 10, 8)).astype(np.float32))
    augment = IntensityAugmentation(p)
    changed = 0
    for seed in range(8):
        got = augment(image, seed)
        assert got.dtype == torch.float32 and torch.equal(got, _monai_augmentation(image, seed, p))
        changed += not torch.equal(got, image)
    assert changed >= 4
