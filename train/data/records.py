"""Report records as the training data needs them, read from the store through `schemas/` only.

:func:`load_case_records` is the single place that reads report records; it validates every stored payload with
:class:`schemas.records.ExtractionPayload`. :func:`records_from_ground_truth` reads the phantom generator's truth
file into the same type (used to train on the demo set without an LLM, and by tests and benchmarks).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable

#: Attenuation words the losses understand; anything else is "unknown".
ATTENUATIONS = ("hypo", "iso", "hyper")


@dataclasses.dataclass(frozen=True)
class ReportedTumor:
    """One reported tumour, or a group of lesions described together, as the report record states it.

    Attributes:
        organ: organ key (schemas.vocab.ORGANS).
        segments: sub-segment keys (``liver_segment_7``, ``pancreas_head``); empty = location unknown.
        side: ``left`` / ``right`` / ``bilateral`` for paired organs, else None.
        diameters_mm: 0 to 3 reported current diameters in mm (empty = size unknown).
        attenuation: ``hypo`` / ``iso`` / ``hyper`` / ``unknown``.
        count: lesions this entry stands for (>= 1).
        count_is_lower_bound: True for "multiple" / "at least".
        size_applies_to_each: the diameters describe every lesion of a group, not only the largest.
    """

    organ: str
    segments: tuple[str, ...] = ()
    side: str | None = None
    diameters_mm: tuple[float, ...] = ()
    attenuation: str = "unknown"
    count: int = 1
    count_is_lower_bound: bool = False
    size_applies_to_each: bool = False


@dataclasses.dataclass(frozen=True)
class CaseRecords:
    """What one report says, reduced to the training targets.

    Attributes:
        report_id: id of the report in the store.
        tumors: reported current lesions (definite ones).
        lesion_free: organs (``kidney``) or organ sides (``kidney_left``) the report declares free of lesions.
        equivocal: organs (or sides) where the report is unsure whether a lesion exists.
    """

    report_id: str
    tumors: tuple[ReportedTumor, ...] = ()
    lesion_free: frozenset[str] = frozenset()
    equivocal: frozenset[str] = frozenset()


def _attenuation(value: str | None) -> str:
    return value if value in ATTENUATIONS else "unknown"


def records_from_payload(report_id: str, payload: Any) -> CaseRecords:
    """Convert a validated :class:`schemas.records.ExtractionPayload` into :class:`CaseRecords`.

    Tumours whose presence is only probable / possible make their organ (side) equivocal instead of counting.
    """
    tumors: list[ReportedTumor] = []
    equivocal: set[str] = set()
    for t in payload.tumors:
        organ = t.organ.value
        side = t.laterality
        if t.presence != "definite":
            equivocal.add(f"{organ}_{side}" if side in ("left", "right") else organ)
            continue
        tumors.append(
            ReportedTumor(
                organ=organ,
                segments=tuple(s.value for s in t.segments),
                side=side,
                diameters_mm=tuple(float(d) for d in t.size.diameters_mm),
                attenuation=_attenuation(t.attenuation),
                count=int(t.count),
                count_is_lower_bound=not t.count_exact,
                size_applies_to_each=t.size.refers_to == "each_of_group",
            )
        )
    lesion_free: set[str] = set()
    for o in payload.organs:
        key = f"{o.organ.value}_{o.laterality}" if o.laterality else o.organ.value
        if o.state == "no_lesion":
            lesion_free.add(key)
        elif o.state == "equivocal":
            equivocal.add(key)
    return CaseRecords(report_id, tuple(tumors), frozenset(lesion_free), frozenset(equivocal))


def load_case_records(store: Any, report_ids: Iterable[str]) -> dict[str, CaseRecords]:
    """Read and validate the current extraction of each report; the only function that reads records.

    Args:
        store: an open :class:`extract.store.Store`.
        report_ids: reports to read.

    Returns:
        report_id -> records, for the reports that have a current extraction.

    Raises:
        ValueError: a stored payload that does not validate, naming the report.
    """
    from pydantic import ValidationError

    from schemas.records import ExtractionPayload

    out: dict[str, CaseRecords] = {}
    for report_id, payload_json in store.tumor_payloads(list(report_ids)).items():
        try:
            payload = ExtractionPayload.model_validate_json(payload_json)
        except ValidationError as exc:
            raise ValueError(f"store: extraction of report {report_id} does not validate: {exc}") from exc
        out[report_id] = records_from_payload(report_id, payload)
    return out


def records_from_ground_truth(path: str | Path) -> dict[str, CaseRecords]:
    """Read a phantom ``ground_truth.jsonl`` into report_id -> :class:`CaseRecords` (what the reports state).

    Raises:
        ValueError: a line that is not valid JSON or lacks a field, naming file and line.
    """
    path = Path(path)
    out: dict[str, CaseRecords] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            tumors = tuple(
                ReportedTumor(
                    organ=t["organ"],
                    segments=tuple(t["segments"]),
                    side=t.get("laterality"),
                    diameters_mm=tuple(t["diameters_mm"] or ()),
                    attenuation=_attenuation(t.get("attenuation")),
                )
                for t in row["tumors"]
            )
            out[row["report_id"]] = CaseRecords(row["report_id"], tumors, frozenset(row["lesion_free_organs"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}, line {n}: not a ground-truth record ({exc!r})") from exc
    return out
