"""Real DICOM files from arrays: CT Image Storage, one file per slice, with true geometry and rescale tags.

No real CT may be downloaded here, so tests and benchmarks write PACS-like exports from the phantoms
(:mod:`train.data.phantoms`): per study a scout (ImageType LOCALIZER), an arterial series on every second slice
and the portal-venous series, each file named by its SOPInstanceUID without an extension.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from train.dicom.config import CT_IMAGE_STORAGE
from train.dicom.geometry import LPS_TO_RAS

_ROOT_UID = "1.2.826.0.1.3680043.8.498."  # pydicom's UID root, for generated UIDs


def uid(*parts: object) -> str:
    """A valid, deterministic DICOM UID derived from ``parts``."""
    from pydicom.uid import generate_uid

    return str(generate_uid(_ROOT_UID, entropy_srcs=[str(p) for p in parts]))


@dataclasses.dataclass(frozen=True)
class StudyTags:
    """The study-level attributes every file of a study repeats."""

    study_uid: str
    accession: str
    patient_id: str = "PHANTOM"
    study_date: str = "20260101"
    modality: str = "CT"


def write_series(
    out_dir: str | Path,
    hu: np.ndarray,
    affine_ras: np.ndarray,
    study: StudyTags,
    *,
    series_number: int,
    description: str,
    series_uid: str | None = None,
    slope: float = 1.0,
    intercept: float = -1024.0,
    padding_value: int | None = None,
    padding: np.ndarray | None = None,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    contrast_agent: str = "",
    slice_thickness_mm: float | None = None,
    transfer_syntax: str | None = None,
    file_name: Callable[[int, str], str] = lambda k, sop: sop,
) -> list[Path]:
    """Write ``hu`` (array axes column, row, slice; HU) as one series, a file per slice.

    Args:
        affine_ras: (4, 4) voxel -> RAS mm of ``hu``; its first two columns give ImageOrientationPatient and
            PixelSpacing, its third the step between the slices' ImagePositionPatient.
        slope / intercept: RescaleSlope / RescaleIntercept; stored values are round((HU - intercept) / slope), int16.
        padding_value / padding: stored value written where the bool mask ``padding`` is set (PixelPaddingValue).
        transfer_syntax: e.g. pydicom.uid.RLELossless; default Explicit VR Little Endian.
        file_name: name of slice k's file from (k, SOPInstanceUID).

    Returns:
        The files written, in slice order.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lps = np.linalg.inv(LPS_TO_RAS) @ np.asarray(affine_ras, float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_cos, col_cos = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    stored = np.round((np.asarray(hu, np.float64) - intercept) / slope)
    if padding is not None:
        stored[padding] = padding_value
    if stored.min() < -32768 or stored.max() > 32767:
        raise ValueError(f"stored values {stored.min()}..{stored.max()} do not fit int16; change slope / intercept")
    stored = stored.astype(np.int16)
    series_uid = series_uid or uid(study.study_uid, series_number)
    paths = []
    for k in range(hu.shape[2]):
        sop = uid(series_uid, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study.study_uid, series_uid
        ds.FrameOfReferenceUID = uid(study.study_uid, "frame")
        ds.Modality, ds.AccessionNumber = study.modality, study.accession
        ds.PatientID, ds.PatientName, ds.StudyDate = study.patient_id, study.patient_id, study.study_date
        ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = series_number, description, k + 1
        ds.ImageType = list(image_type)
        position = lps[:3, 3] + k * lps[:3, 2]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_cos, *col_cos)]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{slice_thickness_mm or spacing[2]:.6f}"
        ds.SliceLocation = f"{position[2]:.6f}"
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:g}", f"{intercept:g}", "HU"
        if contrast_agent:
            ds.ContrastBolusAgent = contrast_agent
        plane = np.ascontiguousarray(stored[:, :, k].T)
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        if padding_value is not None:
            ds.PixelPaddingValue = int(padding_value)
        ds.PixelData = plane.astype("<i2").tobytes()
        if transfer_syntax is not None and transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax, plane, generate_instance_uid=False)
        path = out_dir / file_name(k, sop)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_localizer(out_dir: str | Path, hu: np.ndarray, affine_ras: np.ndarray, study: StudyTags,
                    series_number: int = 1) -> list[Path]:
    """A one-image coronal scout through the middle of ``hu`` (ImageType ORIGINAL/PRIMARY/LOCALIZER)."""
    yc = hu.shape[1] // 2
    nz = hu.shape[2]
    plane = hu[:, yc, ::-1][:, :, None]  # rows run from the top of the volume down
    a = np.asarray(affine_ras, float)
    scout = np.eye(4)
    scout[:3, 0], scout[:3, 1], scout[:3, 2] = a[:3, 0], -a[:3, 2], a[:3, 1]
    scout[:3, 3] = a[:3, :3] @ [0, yc, nz - 1] + a[:3, 3]
    return write_series(out_dir, plane, scout, study, series_number=series_number, description="Scout",
                        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))


def write_phantom_study(out_dir: str | Path, hu: np.ndarray, affine_ras: np.ndarray, study: StudyTags) -> dict:
    """A PACS-like study of three series: scout, arterial (every second slice) and portal venous.

    Returns:
        series description -> list of files.
    """
    out_dir = Path(out_dir)
    arterial = np.asarray(affine_ras, float).copy()
    arterial[:3, 2] *= 2
    step = float(np.linalg.norm(affine_ras[:3, 2]))
    return {
        "Scout": write_localizer(out_dir, hu, affine_ras, study),
        "Arterial": write_series(out_dir, hu[:, :, ::2], arterial, study, series_number=2, description="Arterial",
                                 contrast_agent="IOHEXOL", slice_thickness_mm=2 * step),
        "Portal venous": write_series(out_dir, hu, affine_ras, study, series_number=3, description="Portal venous",
                                      contrast_agent="IOHEXOL"),
    }
