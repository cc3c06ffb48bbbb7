import numpy as np

from train.data.placement import extract_patch, feasible_start_range, start_containing


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
