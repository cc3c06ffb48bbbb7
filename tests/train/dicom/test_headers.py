import shutil

import pytest
from pydicom.data import get_testdata_file

from train.dicom.headers import HeaderError, read_header, scan
from train.dicom.synthetic import write_series

from .conftest import N_STUDIES, one_series, study_tags


def test_ct_small_header_values():
    h = read_header(get_testdata_file("CT_small.dcm"), ("AccessionNumber", "PatientID"))
    assert h.modality == "CT" and h.sop_class == "1.2.840.10008.5.1.4.1.1.2"
    assert h.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert h.position == pytest.approx((-158.135803, -179.035797, -75.699997))
    assert h.pixel_spacing == pytest.approx((0.661468, 0.661468)) and h.slice_thickness == 5.0
    assert h.image_type == ("ORIGINAL", "PRIMARY", "AXIAL") and h.contrast_agent == "ISOVUE300/100"
    assert h.key("AccessionNumber") == "" and h.key("PatientID") == "1CT1" and h.series_number == 1


def test_export_scan_counts_every_file_and_skips_clutter(export):
    root, _ = export
    result = scan(root, ("AccessionNumber",))
    # Per study: 1 scout + 12 arterial + 24 portal-venous files.
    assert len(result.headers) == N_STUDIES * 37
    assert {r: len(p) for r, p in result.skipped.items()} == {"not DICOM (no DICM marker at byte 128)": 2}
    assert {h.key("AccessionNumber") for h in result.headers} == {study_tags(i).accession for i in range(N_STUDIES)}


def test_two_workers_read_the_same_headers(export):
    root, _ = export
    assert sorted(scan(root, workers=2).headers, key=lambda h: h.path) == sorted(scan(root).headers,
                                                                                 key=lambda h: h.path)


def test_broken_files_get_a_reason(tmp_path):
    _, _, files = one_series(tmp_path / "s", n=3)
    files[0].write_bytes(files[0].read_bytes()[:200])  # the header itself cut off
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "dicomdir")
    from pydicom import dcmread

    ds = dcmread(tmp_path / "dicomdir")
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.save_as(tmp_path / "DICOMDIR")
    (tmp_path / "dicomdir").unlink()
    result = scan(tmp_path)
    reasons = {r: [p.rsplit("/", 1)[-1] for p in paths] for r, paths in result.skipped.items()}
    assert len(result.headers) == 2
    assert reasons["DICOMDIR (an index of the export, not an image)"] == ["DICOMDIR"]
    # pydicom reads what it can of a cut header; without its UIDs the file is no slice.
    assert reasons["no StudyInstanceUID / SeriesInstanceUID / SOPInstanceUID (a truncated header, or not an image)"] \
        == [files[0].name]
    with pytest.raises(HeaderError, match="not DICOM"):
        read_header(__file__)


def test_join_tags_are_read(tmp_path):
    write_series(tmp_path, one_series(tmp_path / "x", n=1)[0], one_series(tmp_path / "y", n=1)[1],
                 study_tags(0, patient_id="P77", study_date="20250102"), series_number=1, description="a")
    h = next(h for h in scan(tmp_path, ("PatientID", "StudyDate")).headers if h.key("PatientID") == "P77")
    assert h.key("StudyDate") == "20250102"


def test_missing_folder():
    with pytest.raises(FileNotFoundError, match="not a folder"):
        scan("/nonexistent/export")


def test_a_header_longer_than_the_first_read(tmp_path):
    from pydicom import dcmread

    _, _, files = one_series(tmp_path, n=1)
    ds = dcmread(files[0])
    ds.add_new(0x00091010, "OB", b"\1" * 100_000)  # a long private element before the geometry attributes
    ds.save_as(files[0])
    h = read_header(str(files[0]))
    assert h.pixel_spacing is not None and h.position is not None and h.size > 100_000
