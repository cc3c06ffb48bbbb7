"""The report-guided audit's per-CT row: where a trained model and a report disagree, and why (`rsuper audit`).

Only records and measurements, never report text: a row names organs, sub-segment keys and sizes (mm, mm³), so
the `audit` table and its CSV can be shared without the reports. The DuckDB DDL is derived from `CTAudit`
(`schemas.tables.AUDIT_SCHEMA`).
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field


class AuditReason(str, Enum):
    """Why a CT's prediction and its report disagree (one code per kind of finding)."""

    REPORTED_NOT_FOUND = "reported_not_found"  # a reported tumour with no predicted lesion to match
    SIZE_MISMATCH = "size_mismatch"  # matched, but the diameters differ beyond the relative tolerance
    LIKELY_UNIT_ERROR = "likely_unit_error"  # sizes off by about ten (mm vs cm), or larger than the organ
    COUNT_MISMATCH = "count_mismatch"  # more (or fewer) predicted lesions than the report counts
    LESION_IN_NORMAL_ORGAN = "lesion_in_normal_organ"  # a predicted lesion where the report calls the organ normal
    LOCATION_MISMATCH = "location_mismatch"  # matched, but in another sub-segment or on the other side
    ATTENUATION_MISMATCH = "attenuation_mismatch"  # reported hypo- but the lesion is denser than its organ, or so
    # a reported tumour not found in its organ, and one of its size predicted in an organ the report calls normal
    LESION_IN_OTHER_ORGAN = "lesion_in_other_organ"


AUDIT_REASONS: tuple[str, ...] = tuple(r.value for r in AuditReason)


class CTAudit(BaseModel):
    """One CT of the audit: its disagreement score, the reasons, and the figures behind them.

    Attributes:
        ct_id: the CT (the prediction's folder name).
        report_id: its report, None when the CT has no report record (then it is not scored).
        score: disagreement score: the heaviest finding's weight plus `AuditConfig.other_findings_factor` times the
            others' (0 = model and report agree).
        reasons: distinct reason codes, the heaviest first.
        findings: one line per finding, heaviest first: its reason, organ, location and sizes (mm), e.g.
            ``likely_unit_error: liver (liver_segment_7): reported 450.0 mm, predicted 44.1 mm (x10.20)``.
        organs: organs with at least one finding.
        n_reported: reported lesions in the organs the model has a lesion channel for.
        n_predicted: predicted lesions (connected components of at least the smallest counted volume).
        reported_largest_mm: largest reported diameter (mm), None when no size is reported.
        predicted_largest_mm: largest predicted diameter (mm), None without a predicted lesion.
        predicted_volume_mm3: total predicted lesion volume (mm³).
        predictions: the folder of `rsuper predict` outputs that was audited.
    """

    model_config = ConfigDict(extra="forbid")

    ct_id: str
    report_id: str | None = None
    score: float = Field(0.0, ge=0.0)
    reasons: list[AuditReason] = Field(default_factory=list)
    findings: list[str] = Field(default_factory=list)
    organs: list[str] = Field(default_factory=list)
    n_reported: int = Field(0, ge=0)
    n_predicted: int = Field(0, ge=0)
    reported_largest_mm: float | None = None
    predicted_largest_mm: float | None = None
    predicted_volume_mm3: float = Field(0.0, ge=0.0)
    predictions: str = ""
