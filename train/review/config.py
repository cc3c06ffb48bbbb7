"""Settings of ``rsuper audit``: tolerances and the weight of each kind of disagreement.

A YAML file mirrors :class:`AuditConfig`::

    size_tolerance: 0.5
    weights: {reported_not_found: 1.0, likely_unit_error: 2.0}

Command-line overrides use the same dotted names (``--set weights.count_mismatch=0.25``), validated by the same
models.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from train.config import load_model_config
from train.predict import MIN_LESION_COMPONENT_MM3


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AuditWeights(_Strict):
    """Weight of one finding of each kind in a CT's disagreement score (the score is their sum).

    Lesion findings are scaled by how sure they are: ``reported_not_found`` by the reported diameter over
    ``AuditConfig.full_weight_mm`` (at most 1, at least a quarter, a quarter when unsized),
    ``lesion_in_normal_organ`` and ``lesion_in_other_organ`` by the predicted one and by the lesion's largest
    probability when `rsuper predict --probabilities` wrote them; ``size_mismatch`` by the factor between the sizes
    (|log2 ratio|, at most 3); ``count_mismatch`` by the unmatched lesions on the side with more, each scaled as
    above.
    """

    reported_not_found: float = Field(1.0, ge=0)
    size_mismatch: float = Field(0.5, ge=0)
    likely_unit_error: float = Field(2.0, ge=0)
    count_mismatch: float = Field(0.5, ge=0)
    lesion_in_normal_organ: float = Field(1.0, ge=0)
    location_mismatch: float = Field(0.5, ge=0)
    attenuation_mismatch: float = Field(0.5, ge=0)
    lesion_in_other_organ: float = Field(2.0, ge=0)


class AuditConfig(_Strict):
    """Everything ``rsuper audit`` can be told.

    Attributes:
        min_lesion_volume_mm3: smaller predicted components are not lesions (the detection threshold of
            `rsuper predict`'s summary, a 5 mm sphere).
        size_tolerance: a matched pair is a size mismatch when its diameters differ by more than this fraction
            (0.5: the larger is over 1.5 times the smaller).
        unit_error_factor: sizes off by at least this factor (either way) read as a unit or extraction error
            (mm written as cm: a factor 10); so does a reported diameter over ``organ_extent_factor`` times the
            organ's own largest extent.
        organ_extent_factor: see ``unit_error_factor``.
        segment_extent_factor: a reported diameter over this many times the largest extent of the sub-segments
            it is reported in (their union, from the organ map) is a unit or extraction error as well: looser than
            ``organ_extent_factor``, as a tumour may outgrow the segment the report names.
        measurable_voxels: a reported diameter below this many voxels of the prediction grid's finest spacing reads
            as a unit or extraction error too (0.3 cm for 3 cm on a 3.7 mm grid); on a 0.7 mm CT only sub-voxel
            sizes do. 0 skips the check.
        attenuation_contrast_hu: a lesion whose mean HU is this much above (below) its organ's is not hypo-
            (hyper-) attenuating.
        full_weight_mm: lesions at least this large (mm) count with their full weight; smaller ones less.
        min_organ_share: a predicted component with a smaller share of its voxels on its organ's labels (organ
            map) is not compared with the report: a lesion channel firing in air or in another organ is the model's
            error, not a disagreement with the report (0: compare every component).
        other_findings_factor: a CT's score is its heaviest finding's weight plus this factor times the others'.
            One report error makes one strong disagreement, while a model's own misses and false positives are
            scattered over many CTs as several weaker ones, which a plain sum (1) would rank above it.
        weights: the weight of each finding kind.
    """

    min_lesion_volume_mm3: float = Field(MIN_LESION_COMPONENT_MM3, ge=0)
    size_tolerance: float = Field(0.5, gt=0)
    unit_error_factor: float = Field(5.0, gt=1)
    organ_extent_factor: float = Field(1.2, gt=0)
    segment_extent_factor: float = Field(2.0, gt=0)
    measurable_voxels: float = Field(1.0, ge=0)
    attenuation_contrast_hu: float = Field(10.0, ge=0)
    full_weight_mm: float = Field(10.0, gt=0)
    min_organ_share: float = Field(0.2, ge=0, le=1)
    other_findings_factor: float = Field(0.1, ge=0, le=1)
    weights: AuditWeights = Field(default_factory=AuditWeights)


def load_audit_config(path: str | Path | None, overrides: list[str] | None = None) -> AuditConfig:
    """The audit settings from YAML and ``--set`` overrides (:func:`train.config.load_model_config`)."""
    return load_model_config(AuditConfig, path, overrides)
