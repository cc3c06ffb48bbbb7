import numpy as np


def test_dilate_box_matches_scipy_maximum_filter():
    from scipy import ndimage

    from train.data.painting import dilate_box

    rng = np.random.default_rng(4)
    for radius in [(0, 0, 0), (1, 2, 3), (2, 0, 1), (4, 4, 4), (9, 1, 0)]:
        mask = rng.random((11, 9, 7)) < 0.03
        expected = ndimage.maximum_filter(mask.view(np.uint8), size=[2 * r + 1 for r in radius]).astype(bool)
        got = dilate_box(mask, radius)
        assert np.array_equal(got, expected), radius
        assert got.sum() >= mask.sum()
