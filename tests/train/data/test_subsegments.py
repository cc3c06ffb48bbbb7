import numpy as np

from train.data.labels import CANONICAL_INDEX
from train.data.subsegments import derive_subsegments, split_left_right, split_pancreas


def _affine(spacing, flip_x=False):
    a = np.diag([*spacing, 1.0])
    if flip_x:
        a[0, 0] = -spacing[0]
    return a


def _two_blobs(shape=(40, 20, 20)):
    m = np.zeros(shape, bool)
    m[3:10, 5:15, 5:15] = True  # low i
    m[28:36, 5:15, 5:15] = True  # high i
    return m


def test_kidney_sides_follow_the_affine_not_the_array_index():
    m = _two_blobs()
    left, right = split_left_right(m, _affine((1.0, 1.0, 1.0)))
    assert right[30, 10, 10] and left[5, 10, 10]  # RAS: larger x = patient right
    left_f, right_f = split_left_right(m, _affine((1.0, 1.0, 1.0), flip_x=True))
    assert left_f[30, 10, 10] and right_f[5, 10, 10]  # flipped x axis: the high-index blob is on the left
    assert (left | right).sum() == m.sum() and not (left & right).any()


def test_single_kidney_side_from_the_midline():
    m = np.zeros((40, 20, 20), bool)
    m[30:36, 5:15, 5:15] = True
    left, right = split_left_right(m, _affine((2.0, 1.0, 1.0)))
    assert right.sum() == m.sum() and not left.any()


def test_pancreas_thirds_along_principal_axis_with_head_on_the_right():
    m = np.zeros((100, 20, 20), bool)
    m[:, 6:14, 6:14] = True
    for flip in (False, True):
        parts = split_pancreas(m, _affine((1.5, 1.0, 1.0), flip_x=flip))
        head_at_high_index = not flip
        head = parts["pancreas_head"]
        xs = np.argwhere(head)[:, 0]
        assert (xs.min() >= 69) if head_at_high_index else (xs.max() <= 30)
        assert head.sum() == 30 * 64 and parts["pancreas_body"].sum() == 40 * 64 and parts["pancreas_tail"].sum() == 30 * 64


def test_derive_only_when_parts_are_missing():
    lab = np.zeros((40, 20, 20), np.uint8)
    lab[_two_blobs()] = CANONICAL_INDEX["kidney"]
    out, derived = derive_subsegments(lab, _affine((1.0, 1.0, 1.0)))
    assert derived == ["kidney_left", "kidney_right"]
    assert out[30, 10, 10] == CANONICAL_INDEX["kidney_right"] and out[5, 10, 10] == CANONICAL_INDEX["kidney_left"]
    lab2 = out.copy()
    out2, derived2 = derive_subsegments(lab2, _affine((1.0, 1.0, 1.0)))
    assert derived2 == [] and out2 is lab2


def test_phantom_pancreas_split_matches_generator_truth(phantom_set):
    import nibabel as nib

    img = nib.load(sorted((phantom_set / "cases").iterdir())[0] / "organs.nii.gz")
    truth = np.asarray(img.dataobj)
    pancreas = np.isin(truth, [9, 10, 11])
    parts = split_pancreas(pancreas, img.affine)
    agree = sum(((truth == v) & parts[n]).sum() for v, n in ((9, "pancreas_head"), (10, "pancreas_body"),
                                                               (11, "pancreas_tail")))
    assert agree / pancreas.sum() > 0.7
