"""Per-organ summary of one extraction: exactly one row per organ key (ARCHITECTURE.md `organ_summary`).

Conventions, all computed here from validated records:
- state: `lesion` when a definite or probable lesion is recorded, `equivocal` when only possible ones are (or the
  organ is called equivocal), `no_lesion` when the report clears the organ explicitly, else `not_mentioned`.
  A surgically absent organ (or side) says nothing by itself.
- lesion_count: the sum of the records' counts (a finding repeated in the impression is one record), at least
  the organ statement's own count; "multiple" without a number counts 2 with `count_is_lower_bound`.
- largest_diameter_mm: the largest current diameter (mm) over the organ's records, never a prior size;
  `size_bound_mm` only when no diameter is measured but a bound is ("subcentimeter" = 10 mm).
- largest_location / largest_attenuation: of the record holding the largest diameter (else the first record).
- sides: the sides holding lesions, for paired organs.
"""

from __future__ import annotations

from typing import Any, Optional

from schemas.records import ExtractionPayload, OrganStatus, TumorRecord
from schemas.vocab import ORGANS, PAIRED_ORGANS, Organ, summary_location

_COMPOSITION_AS_ATTENUATION = {"cystic": "cystic", "fat_containing": "fat", "calcified": "calcified"}

SUMMARY_COLUMNS = (
    "organ", "state", "lesion_count", "count_is_lower_bound", "largest_diameter_mm", "size_bound_mm",
    "largest_location", "sides", "largest_attenuation",
)


def _record_attenuation(t: TumorRecord) -> Optional[str]:
    if t.attenuation != "unknown":
        return t.attenuation
    return _COMPOSITION_AS_ATTENUATION.get(t.composition)


def _empty_row(organ: str, state: str) -> dict[str, Any]:
    return {"organ": organ, "state": state, "lesion_count": None, "count_is_lower_bound": False,
            "largest_diameter_mm": None, "size_bound_mm": None, "largest_location": None, "sides": None,
            "largest_attenuation": None}


def _statement_state(statuses: list[OrganStatus]) -> str:
    said = [s for s in statuses if s.surgical_state != "absent"]
    states = {s.state for s in said}
    if "lesion_present" in states:
        return "lesion"
    if "equivocal" in states:
        return "equivocal"
    if "no_lesion" in states:
        return "no_lesion"
    return "not_mentioned"


def organ_row(organ: Organ, payload: ExtractionPayload) -> dict[str, Any]:
    """The summary row of one organ key."""
    statuses = [s for s in payload.organs if s.organ == organ]
    records = [t for t in payload.tumors if t.organ == organ]
    present = [t for t in records if t.presence in ("definite", "probable")]
    if not present:
        state = "equivocal" if records else _statement_state(statuses)
        if state == "lesion":  # an organ statement without any record cannot be counted or sized
            state = "equivocal"
        return _empty_row(organ.value, state)

    count = sum(t.count for t in present)
    lower_bound = any(not t.count_exact for t in present)
    for s in statuses:
        if s.state == "lesion_present" and s.lesion_count is not None and s.lesion_count > count:
            count, lower_bound = s.lesion_count, not s.count_exact
    measured = [t for t in present if t.size.largest_mm is not None]
    largest = max(measured, key=lambda t: t.size.largest_mm) if measured else present[0]
    bounds = [t.size.upper_bound_mm for t in present if t.size.upper_bound_mm is not None]
    sides: Optional[list[str]] = None
    if organ in PAIRED_ORGANS:
        found = set()
        for t in present:
            found.update(("left", "right") if t.laterality == "bilateral" else (t.laterality,) if t.laterality else ())
        sides = sorted(found) or None
    return {
        "organ": organ.value,
        "state": "lesion",
        "lesion_count": count,
        "count_is_lower_bound": lower_bound,
        "largest_diameter_mm": largest.size.largest_mm if measured else None,
        "size_bound_mm": None if measured else (max(bounds) if bounds else None),
        "largest_location": summary_location(organ, largest.segments, largest.laterality),
        "sides": sides,
        "largest_attenuation": _record_attenuation(largest),
    }


_ORGAN_KEYS = tuple(Organ(key) for key in ORGANS)


def organ_summary(payload: ExtractionPayload) -> list[dict[str, Any]]:
    """One row per organ key (all 18, in `ORGANS` order) with the organ-summary columns."""
    # An organ with neither a statement nor a record is `not_mentioned` (what `organ_row` gives it), and so are
    # most organs of most reports.
    said = {s.organ for s in payload.organs} | {t.organ for t in payload.tumors}
    return [organ_row(organ, payload) if organ in said else _empty_row(organ.value, "not_mentioned")
            for organ in _ORGAN_KEYS]
