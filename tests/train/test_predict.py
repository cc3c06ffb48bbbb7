import json

import nibabel as nib
import numpy as np
import pytest
import torch

from train.config import load_config
from train.predict import (
    MIN_LESION_COMPONENT_MM3,
    detection_summary,
    predict_case,
    remove_small_components,
    resample_to_grid,
    restrict_to_organs,
)


def test_resample_to_grid_inverts_a_flip_exactly():
    a = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    ras = np.diag([2.0, 2.0, 3.0, 1.0])
    lps = ras.copy()
    lps[:2, :2] *= -1
    lps[:3, 3] = ras[:3, :3] @ [3, 4, 0]  # voxel (0,0,0) of the flipped grid is voxel (3,4,0) of ras
    back = resample_to_grid(a, ras, lps, (4, 5, 6), order=1)
    np.testing.assert_allclose(back, a[::-1, ::-1, :], atol=1e-6)


def test_restrict_to_organs_zeroes_lesions_outside():
    prob = torch.zeros(2, 10, 10, 10)
    prob[0, :5] = 0.9  # liver in the first half
    prob[1] = 0.8
    out = restrict_to_organs(prob, ["liver", "liver_lesion"], (1.0, 1.0, 1.0), margin_mm=1.0)
    assert out[1, :6].min() == pytest.approx(0.8) and out[1, 7:].max() == 0.0


class _Constant(torch.nn.Module):
    """Lesion logit high where the normalised image is bright."""

    def forward(self, x):
        return torch.cat([x * 0 - 5, (x > 0.5).float() * 10 - 5], 1)


@pytest.mark.parametrize("flip", [False, True])
def test_predict_writes_masks_in_the_input_geometry(tmp_path, flip):
    hu = np.full((20, 18, 12), -100, np.int16)
    hu[5:10, 4:9, 3:7] = 400
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    if flip:
        affine[:2, :2] *= -1
        affine[:2, 3] = [30.0, 27.0]
    nib.save(nib.Nifti1Image(hu, affine), str(tmp_path / "ct.nii.gz"))
    cfg = load_config(None, ["data.classes=[liver, liver_lesion]", "data.patch_size=[8, 8, 8]",
                             "data.normalization=window"])
    summary = predict_case(_Constant(), cfg, tmp_path / "ct.nii.gz", tmp_path / "out" / "c1", overlap=0.25,
                           save_probabilities=True)
    out = nib.load(str(tmp_path / "out" / "c1" / "lesions.nii.gz"))
    np.testing.assert_allclose(out.affine, affine)
    mask = np.asarray(out.dataobj)
    assert mask.shape == hu.shape and ((mask == 1) == (hu > 300)).all()
    assert summary["organs"]["liver"]["lesion_volume_mm3"] == pytest.approx(5 * 5 * 4 * 1.5 * 1.5 * 2.0)
    assert json.loads((tmp_path / "out" / "c1" / "labels.json").read_text())["lesions"] == {"1": "liver_lesion"}
    assert nib.load(str(tmp_path / "out" / "c1" / "probabilities.nii.gz")).shape == (20, 18, 12, 1)


def test_small_components_are_sized_in_mm3_through_the_spacing():
    mask = np.zeros((12, 12, 12), bool)
    mask[1, 1, 1] = True                      # one voxel
    mask[5, 5, 5] = mask[6, 6, 6] = True      # two voxels touching at a corner (26-connected)
    mask[8:11, 8:11, 8:11] = True             # 27 voxels
    coarse = remove_small_components(mask, (3.7, 3.7, 3.75))  # 51.3 mm3 per voxel
    assert not coarse[1, 1, 1] and coarse[5, 5, 5] and coarse[6, 6, 6] and coarse[8:11, 8:11, 8:11].all()
    fine = remove_small_components(mask, (1.0, 1.0, 1.0))
    assert fine.sum() == 0  # 27 mm3 is below a 5 mm sphere
    assert MIN_LESION_COMPONENT_MM3 == pytest.approx(65.45, abs=0.01)
    big = np.zeros((12, 12, 12), bool)
    big[2:7, 2:7, 2:7] = True                 # 125 mm3 at 1 mm
    assert (remove_small_components(big, (1.0, 1.0, 1.0)) == big).all()


def test_detection_summary_counts_a_tumour_two_voxels_across():
    # A 7.5 mm tumour at 3.7 mm spacing: 8 voxels, 411 mm3; a one-voxel opening would have erased it.
    prob = np.zeros((2, 10, 10, 10), np.float32)
    prob[1, 4:6, 4:6, 4:6] = 0.9
    prob[1, 0, 0, 0] = 0.8                    # a lone speck
    s = detection_summary(prob, ["liver", "liver_lesion"], (3.7, 3.7, 3.75))
    assert s["liver"]["lesion_volume_mm3"] == pytest.approx(8 * 3.7 * 3.7 * 3.75)
    assert s["liver"]["max_probability"] == pytest.approx(0.9)
