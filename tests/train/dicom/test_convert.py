import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, RLELossless

from train.data.phantoms import generate_case
from train.dicom.config import SeriesRule
from train.dicom.convert import ConversionError, read_volume, write_nifti
from train.dicom.headers import scan
from train.dicom.series import check_series, group

from .conftest import PHANTOMS, one_series, study_tags


def _only_series(root, rule=SeriesRule()):
    studies = group(scan(root).headers).studies
    (series,) = [s for study in studies.values() for s in study.values()]
    verdict = check_series(series, rule)
    assert verdict.reason is None, verdict.reason
    return verdict.geometry


@pytest.mark.parametrize("flip_xy", [False, True])
def test_round_trip_phantom_dicom_nifti(tmp_path, flip_xy):
    from train.dicom.synthetic import write_series

    case = generate_case(PHANTOMS, 1, flip_xy=flip_xy)
    write_series(tmp_path / "dcm", case.ct, case.affine, study_tags(1), series_number=3, description="PV")
    volume = read_volume(_only_series(tmp_path / "dcm"))
    write_nifti(volume, tmp_path / "ct.nii.gz")
    img = nib.load(tmp_path / "ct.nii.gz")
    assert img.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(img.dataobj), case.ct)
    assert np.abs(img.affine - case.affine).max() < 1e-3
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz", "dcm"]  # no temporary file left


def test_fractional_slope_gives_float_hu_and_padding_becomes_padding_hu(tmp_path):
    pad = np.zeros(PHANTOMS.shape, bool)
    pad[:4] = True  # the scanner's field of view ends here
    hu, _, _ = one_series(tmp_path, slope=0.5, intercept=-1024.0, padding_value=-2000, padding=pad)
    volume = read_volume(_only_series(tmp_path), padding_hu=-1000.0)
    assert volume.hu.dtype == np.float32
    expected = hu.astype(np.float32)
    expected[pad] = -1000.0
    np.testing.assert_array_equal(volume.hu, expected)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_series_decode_to_the_same_voxels(tmp_path, syntax):
    hu, affine, files = one_series(tmp_path, transfer_syntax=syntax)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == syntax
    volume = read_volume(_only_series(tmp_path))
    np.testing.assert_array_equal(volume.hu, hu)
    np.testing.assert_allclose(volume.affine_ras, affine, atol=1e-3)


def test_pydicom_ct_small_as_a_four_slice_series(tmp_path):
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for k in range(4):
        src.SOPInstanceUID = f"{src.SOPInstanceUID.rsplit('.', 1)[0]}.{900 + k}"
        src.ImagePositionPatient = [-158.135803, -179.035797, -75.699997 + 5.0 * k]
        src.save_as(tmp_path / f"IM{k}")
    volume = read_volume(_only_series(tmp_path, SeriesRule(min_slices=4)))
    raw = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array
    assert volume.hu.shape == (128, 128, 4) and volume.hu.dtype == np.int16
    np.testing.assert_array_equal(volume.hu[:, :, 2], raw.T.astype(np.int16) - 1024)  # slope 1, intercept -1024
    expected = np.diag([-0.661468, -0.661468, 5.0, 1.0])
    expected[:3, 3] = (158.135803, 179.035797, -75.699997)  # LPS -> RAS flips x and y
    np.testing.assert_allclose(volume.affine_ras, expected, atol=1e-5)


def test_single_ct_small_slice_takes_its_thickness(tmp_path):
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "one")
    volume = read_volume(_only_series(tmp_path, SeriesRule(min_slices=1)))
    assert volume.hu.shape == (128, 128, 1) and volume.spacing_mm == pytest.approx((0.661468, 0.661468, 5.0))


def test_cut_pixel_data_names_the_file_and_field(tmp_path):
    _, _, files = one_series(tmp_path, n=6)
    geometry = _only_series(tmp_path, SeriesRule(min_slices=6))
    files[4].write_bytes(files[4].read_bytes()[:-500])
    with pytest.raises(ConversionError, match="PixelData: cannot decode") as e:
        read_volume(geometry)
    assert e.value.path == str(files[4]) and str(files[4]) in str(e.value)


def test_a_file_replaced_after_the_scan_is_caught(tmp_path):
    _, _, files = one_series(tmp_path, n=6)
    geometry = _only_series(tmp_path, SeriesRule(min_slices=6))
    shutil.copy(files[0], files[1])
    with pytest.raises(ConversionError, match="SOPInstanceUID: the file changed since the header scan"):
        read_volume(geometry)
