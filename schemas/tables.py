"""Arrow schemas (and so DuckDB DDL) of the `tumors` and `organ_findings` tables, derived from the pydantic models.

`tumors` flattens `TumorRecord` (nested `size` / `comparison` become `size_*` / `comparison_*` columns; evidence
quotes stay in the stored payload JSON only) and adds derived physical columns. `organ_findings` holds the
per-organ summary rows. Both are keyed by `extraction_key`.
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any, Iterable, Literal

import pyarrow as pa
from pydantic import BaseModel

from schemas.measure import ellipsoid_volume_mm3
from schemas.records import ExtractionPayload, TumorRecord
from schemas.summary import organ_summary

_EXCLUDED_FIELDS = {"evidence"}  # free-text quotes: kept in the payload JSON, not in the SQL tables
_KEY_COLUMNS = [pa.field("extraction_key", pa.string(), nullable=False), pa.field("report_id", pa.string(), nullable=False)]


def _arrow_type(annotation: Any) -> pa.DataType:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return _arrow_type(args[0])
    if origin is typing.Annotated:
        return _arrow_type(args[0])
    if origin is list:
        return pa.list_(_arrow_type(args[0]))
    if origin is Literal or (isinstance(annotation, type) and issubclass(annotation, (str, enum.Enum))):
        return pa.string()
    if annotation is bool:
        return pa.bool_()
    if annotation is int:
        return pa.int32()
    if annotation is float:
        return pa.float64()
    raise TypeError(f"no Arrow type for field annotation {annotation!r}")


def _flat_fields(model: type[BaseModel], prefix: str = "") -> list[pa.Field]:
    out: list[pa.Field] = []
    for name, info in model.model_fields.items():
        if name in _EXCLUDED_FIELDS:
            continue
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.extend(_flat_fields(annotation, prefix=f"{prefix}{name}_"))
            continue
        column = "tumor_id" if (prefix, name) == ("", "id") else prefix + name
        out.append(pa.field(column, _arrow_type(annotation)))
    return out


#: Physical columns computed from the record (mm, mm³); the trainer and SQL users read these.
_DERIVED_TUMOR_COLUMNS = [
    pa.field("largest_diameter_mm", pa.float64()),
    pa.field("volume_mm3", pa.float64()),
    pa.field("size_known", pa.bool_()),
]

TUMORS_SCHEMA = pa.schema(_KEY_COLUMNS + _flat_fields(TumorRecord) + _DERIVED_TUMOR_COLUMNS)

ORGAN_FINDINGS_SCHEMA = pa.schema(_KEY_COLUMNS + [
    pa.field("organ", pa.string(), nullable=False),
    pa.field("state", pa.string(), nullable=False),
    pa.field("lesion_count", pa.int32()),
    pa.field("count_is_lower_bound", pa.bool_()),
    pa.field("largest_diameter_mm", pa.float64()),
    pa.field("size_bound_mm", pa.float64()),
    pa.field("largest_location", pa.string()),
    pa.field("sides", pa.list_(pa.string())),
    pa.field("largest_attenuation", pa.string()),
])


def _flatten(model: BaseModel, prefix: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name in type(model).model_fields:
        if name in _EXCLUDED_FIELDS:
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            row.update(_flatten(value, prefix=f"{prefix}{name}_"))
            continue
        column = "tumor_id" if (prefix, name) == ("", "id") else prefix + name
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, list):
            value = [v.value if isinstance(v, enum.Enum) else v for v in value]
        row[column] = value
    return row


def tumor_row(extraction_key: str, report_id: str, tumor: TumorRecord) -> dict[str, Any]:
    row = {"extraction_key": extraction_key, "report_id": report_id, **_flatten(tumor)}
    # Size is known for the trainer when every lesion the record stands for has its own measured diameters.
    size_known = tumor.size.status == "measured" and (not tumor.is_group or (
        tumor.count_exact and tumor.size.refers_to == "each_of_group"))
    row["largest_diameter_mm"] = tumor.size.largest_mm
    row["volume_mm3"] = ellipsoid_volume_mm3(tumor.size.diameters_mm)
    row["size_known"] = size_known
    return row


def extraction_tables(items: Iterable[tuple[str, str, ExtractionPayload]]) -> tuple[pa.Table, pa.Table]:
    """`tumors` and `organ_findings` Arrow tables for (extraction_key, report_id, payload) triples."""
    tumors: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    for key, report_id, payload in items:
        tumors.extend(tumor_row(key, report_id, t) for t in payload.tumors)
        findings.extend({"extraction_key": key, "report_id": report_id, **row} for row in organ_summary(payload))
    return (pa.Table.from_pylist(tumors, schema=TUMORS_SCHEMA),
            pa.Table.from_pylist(findings, schema=ORGAN_FINDINGS_SCHEMA))
