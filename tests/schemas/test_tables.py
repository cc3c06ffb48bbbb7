import math

import pyarrow as pa

from schemas.records import ExtractionPayload, TumorRecord
from schemas.tables import ORGAN_FINDINGS_SCHEMA, TUMORS_SCHEMA, extraction_tables
from schemas.vocab import ORGANS


def test_tumor_columns_cover_every_record_field():
    columns = set(TUMORS_SCHEMA.names)
    for name, info in TumorRecord.model_fields.items():
        if name == "evidence":
            continue
        if name in ("size", "comparison"):
            nested = info.annotation.model_fields
            assert {f"{name}_{n}" for n in nested} <= columns
        else:
            assert ("tumor_id" if name == "id" else name) in columns
    assert TUMORS_SCHEMA.field("size_diameters_mm").type == pa.list_(pa.float64())
    assert TUMORS_SCHEMA.field("segments").type == pa.list_(pa.string())


def test_extraction_tables_rows_and_derived_values():
    payload = ExtractionPayload.model_validate({"tumors": [
        {"id": 1, "organ": "kidney", "laterality": "left", "segments": ["kidney_upper_pole"],
         "size": {"status": "measured", "diameters_mm": [20, 10], "reported_text": "2.0 x 1.0 cm"}},
        {"id": 2, "organ": "liver", "count": 3, "count_exact": False},
    ]})
    tumors, findings = extraction_tables([("k1", "r1", payload)])
    assert tumors.schema == TUMORS_SCHEMA and findings.schema == ORGAN_FINDINGS_SCHEMA
    assert findings.num_rows == len(ORGANS)
    rows = tumors.to_pylist()
    assert rows[0]["segments"] == ["kidney_upper_pole"] and rows[0]["size_known"] is True
    assert abs(rows[0]["volume_mm3"] - math.pi * 20 * 10 * 15 / 6) < 1e-9
    assert rows[1]["size_known"] is False and rows[1]["volume_mm3"] is None
