"""Settings of ``rsuper images import``: which series counts as the study's CT, how studies meet reports.

A YAML file mirrors :class:`DicomImportConfig`::

    series: {min_slices: 40, max_slice_thickness_mm: 3.0, preferred_keywords: [portal, venous]}
    join_keys: [AccessionNumber, PatientID+StudyDate]

Command-line overrides use the same dotted names (``--set series.min_slices=40``), validated by the same models.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from train.config import load_model_config

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: DICOM value representations stored as text (the header scan decodes these itself).
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR",
                      "UT"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeriesRule(_Strict):
    """Which series of a study may be converted, and which one is chosen (docs/data.md, "Series choice").

    A series is usable when it passes every check; among usable series the chosen one is, in order: the best
    phase rank (0: a ``preferred_keywords`` word in SeriesDescription; 1: contrast given, ContrastBolusAgent set;
    2: neither; 3: an ``avoid_keywords`` word, even beside a preferred one), then the thinnest slice step (mm, from
    the slice positions), then the most slices, then the lowest SeriesNumber, then the SeriesInstanceUID.

    Attributes:
        modality: the Modality every file of the series must have.
        sop_classes: accepted SOP Class UIDs (default CT Image Storage, one file per slice).
        skip_image_types: a series with any of these ImageType values is skipped (scouts are LOCALIZER).
        max_axial_deviation_deg: largest angle between the slice normal and the patient's z axis.
        max_slice_thickness_mm: thicker series are skipped (SliceThickness, or the slice step when absent).
        min_slices: series with fewer slices are skipped.
        max_tilt_deg: largest angle between the slice stack's direction and the slice normal (gantry tilt).
        spacing_tolerance: largest deviation of one slice step from the median step, as a fraction of it.
        preferred_keywords: SeriesDescription words of the wanted phase (portal venous), whole words, any case.
        avoid_keywords: SeriesDescription words of series to choose only when nothing else is usable.
    """

    modality: str = "CT"
    sop_classes: tuple[str, ...] = (CT_IMAGE_STORAGE,)
    skip_image_types: tuple[str, ...] = ("LOCALIZER",)
    max_axial_deviation_deg: float = Field(10.0, ge=0.0, le=90.0)
    max_slice_thickness_mm: float = Field(5.0, gt=0.0)
    min_slices: int = Field(20, ge=1)
    max_tilt_deg: float = Field(0.5, ge=0.0)
    spacing_tolerance: float = Field(0.01, gt=0.0, lt=0.5)
    preferred_keywords: tuple[str, ...] = ("portal", "venous", "pv", "portal venous")
    avoid_keywords: tuple[str, ...] = ("arterial", "delayed", "non contrast", "noncontrast", "native", "lung",
                                       "bone", "mip", "scout", "topogram")

    @field_validator("preferred_keywords", "avoid_keywords")
    @classmethod
    def _lower(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(k.strip().lower() for k in v if k.strip())


class DicomImportConfig(_Strict):
    """Everything ``rsuper images import`` can be told.

    Attributes:
        series: the series checks and the choice among usable series.
        join_keys: how a study finds its report, tried in order: DICOM keywords, several joined with ``+``
            (their values joined by ``join_separator``); the first whose value is a stored report id wins.
        join_separator: between the values of a multi-tag key (``PatientID+StudyDate`` -> ``P123_20240101``).
        require_report: convert only studies whose report is in the store.
        padding_hu: HU given to voxels equal to PixelPaddingValue (or inside its range).
        scan_workers: processes reading headers (1 = in this process).
        val_fraction / test_fraction: split shares for new cases (hash of ct_id, as ``rsuper cases``).
    """

    series: SeriesRule = Field(default_factory=SeriesRule)
    join_keys: tuple[str, ...] = ("AccessionNumber",)
    join_separator: str = "_"
    require_report: bool = False
    padding_hu: float = -1024.0
    scan_workers: int = Field(2, ge=1)
    val_fraction: float = Field(0.1, ge=0.0, le=1.0)
    test_fraction: float = Field(0.0, ge=0.0, le=1.0)

    @field_validator("join_keys")
    @classmethod
    def _known_keywords(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from pydicom.datadict import dictionary_VR, tag_for_keyword

        if not v:
            raise ValueError("give at least one join key, e.g. AccessionNumber")
        for key in v:
            unknown = [k for k in key.split("+") if tag_for_keyword(k.strip()) is None]
            if unknown:
                raise ValueError(f"{key!r}: not DICOM keywords: {unknown} (e.g. AccessionNumber, PatientID)")
            # The header scan decodes values as text; a binary value (US, FL, ...) would read as garbage.
            binary = [k for k in key.split("+") if dictionary_VR(tag_for_keyword(k.strip())) not in TEXT_VRS]
            if binary:
                raise ValueError(f"{key!r}: {binary} are not text attributes; join on text tags such as PatientID")
        return tuple("+".join(k.strip() for k in key.split("+")) for key in v)

    @property
    def join_tags(self) -> tuple[str, ...]:
        """Every DICOM keyword the join keys read, in first-use order."""
        return tuple(dict.fromkeys(k for key in self.join_keys for k in key.split("+")))


def load_import_config(path: str | Path | None, overrides: list[str] | None = None) -> DicomImportConfig:
    """The import config from YAML (defaults when ``path`` is None) and dotted ``overrides``.

    Raises:
        ConfigError: unreadable YAML or invalid fields, naming the file and the field path.
    """
    return load_model_config(DicomImportConfig, path, overrides)
