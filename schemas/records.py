"""The validated record of one report's extraction: tumor records plus per-organ states.

`ExtractionPayload` is the canonical, fully validated form stored in DuckDB (`extractions.payload`) and read by
the trainer. The LLM fills a smaller schema (`schemas.llm`), which `extract.reading` converts into this one.
Cross-field rules live in validators; with `context={"report_text": ...}` evidence quotes must occur in the report.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from schemas.measure import parse_size_text, same_diameters, three_axes_mm
from schemas.organ_tables import DEFAULT_MAX_DIAMETER_MM
from schemas.vocab import (
    BENIGN_TYPES,
    MALIGNANT_TYPES,
    ORGAN_MAX_DIAMETER_MM,
    ORGAN_SUBSEGMENTS,
    PAIRED_ORGANS,
    TYPE_ORGANS,
    LesionType,
    Organ,
    SubSegment,
)

#: Bumped whenever a field or rule changes meaning; part of every extraction's run key.
SCHEMA_VERSION = "1.0.0"

Laterality = Literal["left", "right", "bilateral"]
Side = Literal["left", "right"]
Presence = Literal["definite", "probable", "possible"]
TypeCertainty = Literal["stated", "probable", "possible", "not_stated"]
Malignancy = Literal["malignant", "benign", "indeterminate", "unknown"]
Composition = Literal["solid", "cystic", "mixed", "fat_containing", "calcified", "unknown"]
Attenuation = Literal["hypo", "iso", "hyper", "heterogeneous", "unknown"]
Change = Literal["new", "increased", "decreased", "stable", "not_compared"]
SizeStatus = Literal["measured", "bounded", "qualitative", "not_reported"]
SizeQualifier = Literal["tiny", "small", "subcentimeter", "large", "massive"]
SizeRefersTo = Literal["lesion", "largest_of_group", "each_of_group"]
OrganState = Literal["lesion_present", "equivocal", "no_lesion", "not_mentioned"]
SurgicalState = Literal["intact", "partially_resected", "absent", "transplant", "not_stated"]

DiameterMm = Annotated[float, Field(ge=1.0, le=400.0, description="diameter in mm")]
EvidenceQuote = Annotated[str, Field(min_length=3, max_length=400)]


_WHITESPACE = re.compile(r"\s+")
_SUBSEGMENT_ORDER = {s: i for i, s in enumerate(SubSegment)}


def match_key(text: str) -> str:
    """Loose key for 'is this quote in the report': NFKC, casefold, collapsed whitespace."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, validate_assignment=False)


class Size(_Strict):
    """Current size of a lesion, or of the largest / each member of a group (mm)."""

    status: SizeStatus = Field("not_reported", description="measured | bounded | qualitative | not_reported")
    diameters_mm: list[DiameterMm] = Field(default_factory=list, max_length=3)
    upper_bound_mm: Optional[DiameterMm] = Field(None, description="with status=bounded: at most this size (mm)")
    qualifier: Optional[SizeQualifier] = None
    refers_to: SizeRefersTo = "lesion"
    reported_text: Optional[str] = Field(None, max_length=80, description="the measurement exactly as written")

    @field_validator("diameters_mm")
    @classmethod
    def _round(cls, v: list[float]) -> list[float]:
        return [round(x, 1) for x in v]

    @model_validator(mode="after")
    def _consistent(self) -> "Size":
        if self.status == "measured":
            if not self.diameters_mm:
                raise ValueError("size.status=measured needs 1 to 3 diameters_mm")
            if not self.reported_text:
                raise ValueError("size.status=measured needs reported_text (the measurement as written)")
            parsed = parse_size_text(self.reported_text)
            if parsed is not None and not same_diameters(parsed, self.diameters_mm):
                raise ValueError(
                    f"size.diameters_mm {self.diameters_mm} do not match reported_text "
                    f"{self.reported_text!r} (= {parsed} mm)"
                )
        elif self.diameters_mm:
            raise ValueError(f"size.status={self.status} must not carry diameters_mm")
        if (self.status == "bounded") != (self.upper_bound_mm is not None):
            raise ValueError("size.upper_bound_mm is required with, and only with, status=bounded")
        if self.status == "qualitative" and self.qualifier is None:
            raise ValueError("size.status=qualitative needs a qualifier")
        return self

    @property
    def largest_mm(self) -> Optional[float]:
        """Largest current diameter (mm) when measured, else None."""
        return max(self.diameters_mm) if self.diameters_mm else None

    def axes_mm(self) -> Optional[tuple[float, float, float]]:
        """Three ellipsoid axes in mm (1 axis → sphere; 2 → third is their mean), None if not measured."""
        return three_axes_mm(self.diameters_mm)


class Comparison(_Strict):
    change: Change = "not_compared"
    prior_diameters_mm: list[DiameterMm] = Field(default_factory=list, max_length=3)
    prior_text: Optional[str] = Field(None, max_length=80)

    @model_validator(mode="after")
    def _consistent(self) -> "Comparison":
        if self.change == "new" and self.prior_diameters_mm:
            raise ValueError("comparison: a new lesion cannot have a prior size")
        return self


class TumorRecord(_Strict):
    """One focal lesion, or one group of lesions described together ("multiple cysts")."""

    id: int = Field(ge=1, le=999, description="1-based, unique within the report")
    organ: Organ
    laterality: Optional[Laterality] = Field(None, description="paired organs only; bilateral only for groups")
    segments: list[SubSegment] = Field(default_factory=list, max_length=8,
                                       description="sub-segments of organ; the lesion lies in their union")
    location_text: Optional[str] = Field(None, max_length=120)
    lesion_type: LesionType = LesionType.LESION_UNSPECIFIED
    type_text: Optional[str] = Field(None, max_length=120)
    type_certainty: TypeCertainty = "not_stated"
    presence: Presence = Field("definite", description="certainty that the lesion exists at all")
    malignancy: Malignancy = "unknown"
    composition: Composition = "unknown"
    attenuation: Attenuation = "unknown"
    classification: Optional[str] = Field(None, max_length=40, description="e.g. 'Bosniak IIF', 'LI-RADS 5'")
    size: Size = Field(default_factory=Size)
    count: int = Field(1, ge=1, le=500, description="lesions this record stands for (lower bound if not exact)")
    count_exact: bool = True
    innumerable: bool = False
    comparison: Comparison = Field(default_factory=Comparison)
    post_treatment: bool = False
    evidence: list[EvidenceQuote] = Field(default_factory=list, max_length=4)

    @field_validator("segments")
    @classmethod
    def _sorted_unique(cls, v: list[SubSegment]) -> list[SubSegment]:
        return sorted(set(v), key=_SUBSEGMENT_ORDER.__getitem__)

    @property
    def is_group(self) -> bool:
        return self.count > 1 or not self.count_exact

    @model_validator(mode="after")
    def _consistent(self) -> "TumorRecord":
        where = f"tumor {self.id} ({self.organ.value})"
        allowed = ORGAN_SUBSEGMENTS.get(self.organ, frozenset())
        wrong = [s.value for s in self.segments if s not in allowed]
        if wrong:
            raise ValueError(f"{where}: sub-segments {wrong} do not belong to this organ")
        if self.laterality is not None and self.organ not in PAIRED_ORGANS:
            raise ValueError(f"{where}: laterality is only meaningful for paired organs")
        if self.laterality == "bilateral" and not self.is_group:
            raise ValueError(f"{where}: a single lesion cannot be bilateral")
        if self.innumerable and self.count_exact:
            raise ValueError(f"{where}: innumerable lesions cannot have an exact count")
        if not self.is_group and self.size.refers_to != "lesion":
            raise ValueError(f"{where}: size.refers_to must be 'lesion' for a single lesion")
        allowed_organs = TYPE_ORGANS.get(self.lesion_type)
        if allowed_organs is not None and self.organ not in allowed_organs:
            raise ValueError(f"{where}: {self.lesion_type.value} is not a lesion type of this organ")
        implied = ("malignant" if self.lesion_type in MALIGNANT_TYPES
                   else "benign" if self.lesion_type in BENIGN_TYPES else None)
        if implied is not None:
            if self.malignancy == "unknown":
                self.malignancy = implied
            elif self.malignancy in ("malignant", "benign") and self.malignancy != implied:
                raise ValueError(f"{where}: {self.lesion_type.value} implies {implied}, not {self.malignancy}")
        if self.lesion_type in (LesionType.CYST, LesionType.PSEUDOCYST):
            if self.composition == "unknown":
                self.composition = "cystic"
            elif self.composition not in ("cystic", "mixed"):
                raise ValueError(f"{where}: a cyst cannot be {self.composition}")
        limit = ORGAN_MAX_DIAMETER_MM.get(self.organ, DEFAULT_MAX_DIAMETER_MM)
        sizes = list(self.size.diameters_mm) + ([self.size.upper_bound_mm] if self.size.upper_bound_mm else [])
        if any(d > limit for d in sizes):
            raise ValueError(f"{where}: a diameter above {limit:g} mm is implausible here")
        return self


class OrganStatus(_Strict):
    """What the report says about an organ as a whole, or one side of a paired organ."""

    organ: Organ
    laterality: Optional[Side] = Field(None, description="None = whole organ / both sides")
    state: OrganState
    surgical_state: SurgicalState = "not_stated"
    lesion_count: Optional[int] = Field(None, ge=0, le=500)
    count_exact: bool = True
    evidence: list[EvidenceQuote] = Field(default_factory=list, max_length=4)

    @model_validator(mode="after")
    def _consistent(self) -> "OrganStatus":
        where = self.organ.value + (f" ({self.laterality})" if self.laterality else "")
        if self.laterality is not None and self.organ not in PAIRED_ORGANS:
            raise ValueError(f"{where}: laterality is only meaningful for paired organs")
        if self.state == "no_lesion":
            if self.lesion_count not in (None, 0):
                raise ValueError(f"{where}: no_lesion with lesion_count {self.lesion_count}")
            self.lesion_count = 0
        if self.state == "lesion_present" and self.lesion_count == 0:
            raise ValueError(f"{where}: lesion_present with lesion_count 0")
        if self.surgical_state == "absent" and self.state in ("lesion_present", "equivocal"):
            raise ValueError(f"{where}: a surgically absent organ cannot hold a lesion")
        return self


def _check_evidence(quotes: list[str], report_key: str, where: str) -> None:
    for quote in quotes:
        if match_key(quote) not in report_key:
            raise ValueError(f"{where}: evidence {quote[:40]!r}... is not a verbatim quote of the report")


class ExtractionPayload(_Strict):
    """Everything extracted from one report: tumor records and organ states."""

    tumors: list[TumorRecord] = Field(default_factory=list, max_length=60)
    organs: list[OrganStatus] = Field(default_factory=list, max_length=40)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> "ExtractionPayload":
        ids = [t.id for t in self.tumors]
        if len(ids) != len(set(ids)):
            raise ValueError("tumor ids must be unique")
        keys = [(o.organ, o.laterality) for o in self.organs]
        if len(keys) != len(set(keys)):
            raise ValueError("one organ status per (organ, laterality)")
        for t in self.tumors:  # every tumor is covered by an organ status
            side = t.laterality if t.laterality in ("left", "right") else None
            if (t.organ, side) not in keys and (t.organ, None) not in keys:
                state: OrganState = "lesion_present" if t.presence == "definite" else "equivocal"
                self.organs.append(OrganStatus(organ=t.organ, laterality=side, state=state))
                keys.append((t.organ, side))
        for o in self.organs:
            mine = [t for t in self.tumors if t.organ == o.organ
                    and (o.laterality is None or t.laterality in (o.laterality, "bilateral"))]
            where = o.organ.value + (f" ({o.laterality})" if o.laterality else "")
            if o.state in ("no_lesion", "not_mentioned") and any(
                    t.laterality != "bilateral" or o.laterality is None for t in mine):
                raise ValueError(f"{where} is {o.state} but has tumor records {[t.id for t in mine]}")
            if o.state in ("lesion_present", "equivocal") and not mine:
                raise ValueError(f"{where} is {o.state} but no tumor record lies in it")
            if o.lesion_count is not None and mine and o.state == "lesion_present":
                floor = sum(t.count for t in mine)
                if o.lesion_count < floor:
                    raise ValueError(f"{where}: lesion_count {o.lesion_count} < {floor} lesions in its records")
        text = (info.context or {}).get("report_text") if info is not None else None
        if text:
            key = match_key(text)
            for t in self.tumors:
                _check_evidence(t.evidence, key, f"tumor {t.id}")
            for o in self.organs:
                _check_evidence(o.evidence, key, f"organ {o.organ.value}")
        return self
