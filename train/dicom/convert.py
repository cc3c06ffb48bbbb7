"""Read a chosen series' pixels into one HU volume and write it as NIfTI, atomically.

pydicom decodes each slice (uncompressed, RLE, and through the pylibjpeg plugins JPEG, JPEG-LS and JPEG 2000);
the geometry comes from :mod:`train.dicom.geometry`, computed from the same headers the series was checked on.
HU = stored value x RescaleSlope + RescaleIntercept, per slice; stored values equal to PixelPaddingValue (or
between it and PixelPaddingRangeLimit) become ``padding_hu``. The volume stays int16 when every slope and
intercept is an integer and the HU fit, else float32.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from train.dicom.geometry import SeriesGeometry

_INT16 = np.iinfo(np.int16)


class ConversionError(Exception):
    """A slice that cannot be read or does not fit the series; names the file and the DICOM attribute."""

    def __init__(self, path: str, field: str, message: str):
        super().__init__(f"{path}: {field}: {message}")
        self.path = path
        self.field = field
        self.message = message


@dataclasses.dataclass(frozen=True, eq=False)
class Volume:
    """A CT volume in HU, array axes (column, row, slice), with its voxel -> RAS mm affine."""

    hu: np.ndarray
    affine_ras: np.ndarray

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine_ras[:3, :3], axis=0))


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _padding_mask(ds, raw: np.ndarray) -> np.ndarray | None:
    value = ds.get("PixelPaddingValue")
    if value is None:
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    if limit is None:
        return raw == value
    lo, hi = sorted((int(value), int(limit)))
    return (raw >= lo) & (raw <= hi)


def read_volume(geometry: SeriesGeometry, padding_hu: float = -1024.0) -> Volume:
    """Decode every slice of a checked series, in geometry order, into one HU volume.

    Raises:
        ConversionError: a slice that cannot be read or decoded, changed since the header scan, is multi-frame
            or colour, or differs in size from the first slice.
    """
    import pydicom

    hu: np.ndarray | None = None
    integral = float(padding_hu).is_integer()
    for k, header in enumerate(geometry.slices):
        try:
            ds = pydicom.dcmread(header.path)
        except Exception as exc:  # pydicom raises many types for broken files
            raise ConversionError(header.path, "header", f"unreadable ({_short(exc)})") from None
        if str(ds.get("SOPInstanceUID", "")) != header.sop_uid:
            raise ConversionError(header.path, "SOPInstanceUID", "the file changed since the header scan")
        try:
            raw = ds.pixel_array
        except Exception as exc:  # a truncated file, or a transfer syntax without a decoder
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            name = f" (transfer syntax {syntax.name})" if syntax is not None else ""
            raise ConversionError(header.path, "PixelData", f"cannot decode{name}: {_short(exc)}") from None
        if raw.ndim != 2:
            raise ConversionError(header.path, "PixelData",
                                  f"expected one grey-scale frame, got an array of shape {raw.shape}")
        if hu is None:
            hu = np.empty((raw.shape[1], raw.shape[0], len(geometry.slices)), np.float32)
        elif raw.shape != (hu.shape[1], hu.shape[0]):
            raise ConversionError(header.path, "Rows/Columns",
                                  f"{raw.shape[0]} x {raw.shape[1]}, the first slice has {hu.shape[1]} x {hu.shape[0]}")
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        integral = integral and slope.is_integer() and intercept.is_integer()
        plane = raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        padding = _padding_mask(ds, raw)
        if padding is not None:
            plane[padding] = padding_hu
        hu[:, :, k] = plane.T
    assert hu is not None
    if integral and hu.size and _INT16.min <= hu.min() and hu.max() <= _INT16.max:
        hu = hu.astype(np.int16)
    return Volume(hu, geometry.affine_ras)


def write_nifti(volume: Volume, path: str | Path) -> None:
    """Write ``volume`` as NIfTI (qform and sform = the affine, units mm) through a temporary file and a rename."""
    import nibabel as nib

    path = Path(path)
    img = nib.Nifti1Image(volume.hu, volume.affine_ras)
    img.set_qform(volume.affine_ras, code=1)
    img.set_sform(volume.affine_ras, code=1)
    img.header.set_xyzt_units("mm")
    tmp = path.with_name(path.name + ".tmp.nii.gz")
    try:
        nib.save(img, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
