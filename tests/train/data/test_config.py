import pytest

from train.data.config import PatchDatasetConfig


def test_mirroring_left_right_is_refused_for_sided_channels():
    with pytest.raises(ValueError, match="kidney_left"):
        PatchDatasetConfig(classes=("liver", "kidney_left", "kidney_right"), mirror_axes=(0, 2))
    assert PatchDatasetConfig(classes=("liver", "kidney_left"), mirror_axes=(1, 2)).mirror_axes == (1, 2)
    with pytest.raises(ValueError, match="distinct axes"):
        PatchDatasetConfig(mirror_axes=(3,))
