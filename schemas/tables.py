"""Arrow schemas (and so DuckDB DDL) of the `tumors`, `organ_findings` and `audit` tables, derived from the pydantic
models.

`tumors` flattens `TumorRecord` (nested `size` / `comparison` become `size_*` / `comparison_*` columns; evidence
quotes stay in the stored payload JSON only) and adds derived physical columns. `organ_findings` holds the
per-organ summary rows. Both are keyed by `extraction_key`. `audit` holds one row per audited CT (`schemas.audit`).
"""

from __future__ import annotations

import enum
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterable, Literal

import pyarrow as pa
from pydantic import BaseModel

from schemas.audit import CTAudit
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
        row[column] = _plain(value)
    return row


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return [v.value if isinstance(v, enum.Enum) else v for v in value]
    return value


def _size_known(tumor: TumorRecord) -> bool:
    # Size is known for the trainer when every lesion the record stands for has its own measured diameters.
    return tumor.size.status == "measured" and (not tumor.is_group or (
        tumor.count_exact and tumor.size.refers_to == "each_of_group"))


def _derived_values(tumor: TumorRecord) -> tuple[float | None, float | None, bool]:
    """The `_DERIVED_TUMOR_COLUMNS` of one record, in their order."""
    return tumor.size.largest_mm, ellipsoid_volume_mm3(tumor.size.diameters_mm), _size_known(tumor)


def tumor_row(extraction_key: str, report_id: str, tumor: TumorRecord) -> dict[str, Any]:
    derived = dict(zip((f.name for f in _DERIVED_TUMOR_COLUMNS), _derived_values(tumor)))
    return {"extraction_key": extraction_key, "report_id": report_id, **_flatten(tumor), **derived}


def _attribute_paths(model: type[BaseModel], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The attribute path of every flat column of `model`, in `_flat_fields` order."""
    out: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        if name in _EXCLUDED_FIELDS:
            continue
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.extend(_attribute_paths(annotation, (*path, name)))
        else:
            out.append((*path, name))
    return out


_TUMOR_PATHS = _attribute_paths(TumorRecord)


def _columns(schema: pa.Schema, columns: dict[str, list[Any]]) -> pa.Table:
    return pa.Table.from_arrays([pa.array(columns[f.name], f.type) for f in schema], schema=schema)


_FINDING_VALUE_COLUMNS = ORGAN_FINDINGS_SCHEMA.names[len(_KEY_COLUMNS):]


@dataclass(frozen=True)
class PayloadRows:
    """What the store keeps of one payload, without its keys: the payload JSON and the values of its `tumors` and
    `organ_findings` rows (the columns after `extraction_key` and `report_id`, in schema order).

    Plain strings and tuples: cheap to send from the process that validated the answer (`extract.answer_pool`),
    where it is built, to the one that writes, which only adds the keys.
    """

    payload_json: str
    tumors: tuple[tuple[Any, ...], ...]
    findings: tuple[tuple[Any, ...], ...]


def payload_rows(payload: ExtractionPayload) -> PayloadRows:
    """The stored form of `payload` (the values `tumor_row` and `organ_summary` give, row for row)."""
    tumors = []
    for t in payload.tumors:
        values = []
        for path in _TUMOR_PATHS:
            value: Any = t
            for name in path:
                value = getattr(value, name)
            values.append(_plain(value))
        values += _derived_values(t)
        tumors.append(tuple(values))
    findings = tuple(tuple(row.get(name) for name in _FINDING_VALUE_COLUMNS) for row in organ_summary(payload))
    return PayloadRows(payload.model_dump_json(), tuple(tumors), findings)


def _keyed_table(schema: pa.Schema, keys: list[str], report_ids: list[str], rows: list[tuple[Any, ...]]) -> pa.Table:
    n_values = len(schema) - len(_KEY_COLUMNS)
    columns = list(zip(*rows)) if rows else [()] * n_values
    arrays = [pa.array(keys, pa.string()), pa.array(report_ids, pa.string())]
    arrays += [pa.array(column, field.type) for column, field in zip(columns, list(schema)[len(_KEY_COLUMNS):])]
    return pa.Table.from_arrays(arrays, schema=schema)


def extraction_tables(items: Iterable[tuple[str, str, ExtractionPayload | PayloadRows]]) -> tuple[pa.Table, pa.Table]:
    """`tumors` and `organ_findings` Arrow tables for (extraction_key, report_id, payload or its `PayloadRows`)
    triples, built column by column (no dict per row)."""
    tumor_keys: list[str] = []
    tumor_ids: list[str] = []
    tumor_values: list[tuple[Any, ...]] = []
    finding_keys: list[str] = []
    finding_ids: list[str] = []
    finding_values: list[tuple[Any, ...]] = []
    for key, report_id, item in items:
        rows = item if isinstance(item, PayloadRows) else payload_rows(item)
        tumor_keys += [key] * len(rows.tumors)
        tumor_ids += [report_id] * len(rows.tumors)
        tumor_values += rows.tumors
        finding_keys += [key] * len(rows.findings)
        finding_ids += [report_id] * len(rows.findings)
        finding_values += rows.findings
    return (_keyed_table(TUMORS_SCHEMA, tumor_keys, tumor_ids, tumor_values),
            _keyed_table(ORGAN_FINDINGS_SCHEMA, finding_keys, finding_ids, finding_values))


#: The `audit` table (one row per audited CT, keyed by ct_id), derived from `schemas.audit.CTAudit`.
AUDIT_SCHEMA = pa.schema([f.with_nullable(False) if f.name == "ct_id" else f for f in _flat_fields(CTAudit)])


def audit_table(audits: Iterable[CTAudit]) -> pa.Table:
    """The `audit` Arrow table of :class:`schemas.audit.CTAudit` rows."""
    columns: dict[str, list[Any]] = {f.name: [] for f in AUDIT_SCHEMA}
    for audit in audits:
        for name, value in _flatten(audit).items():
            columns[name].append(value)
    return _columns(AUDIT_SCHEMA, columns)
