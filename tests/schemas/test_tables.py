import math

import pyarrow as pa

from schemas.records import ExtractionPayload, TumorRecord
from schemas.audit import CTAudit
from schemas.tables import (AUDIT_SCHEMA, ORGAN_FINDINGS_SCHEMA, TUMORS_SCHEMA, audit_table, extraction_tables,
                            payload_rows)
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


def test_batched_tables_hold_the_rows_of_each_payload_in_order():
    from schemas.summary import organ_summary
    from schemas.tables import tumor_row

    payloads = [
        ExtractionPayload.model_validate({"tumors": [
            {"id": 1, "organ": "lung", "laterality": "bilateral", "count": 4, "count_exact": False,
             "segments": ["lung_lower_lobe", "lung_upper_lobe"], "lesion_type": "metastasis",
             "size": {"status": "measured", "diameters_mm": [9], "reported_text": "9 mm",
                      "refers_to": "largest_of_group"},
             "comparison": {"change": "increased", "prior_diameters_mm": [6], "prior_text": "6 mm"}},
            {"id": 2, "organ": "liver", "presence": "possible",
             "size": {"status": "bounded", "upper_bound_mm": 10, "qualifier": "subcentimeter"}},
        ], "organs": [{"organ": "kidney", "state": "no_lesion"}, {"organ": "spleen", "state": "not_mentioned"}]}),
        ExtractionPayload(),
        ExtractionPayload.model_validate({"tumors": [{"id": 1, "organ": "pancreas", "segments": ["pancreas_head"]}]}),
    ]
    items = [(f"k{i}", f"r{i}", p) for i, p in enumerate(payloads)]
    tumors, findings = extraction_tables(items)
    expected_tumors = [tumor_row(k, r, t) for k, r, p in items for t in p.tumors]
    expected_findings = [{"extraction_key": k, "report_id": r, **row} for k, r, p in items for row in organ_summary(p)]
    assert tumors.to_pylist() == pa.Table.from_pylist(expected_tumors, schema=TUMORS_SCHEMA).to_pylist()
    assert findings.to_pylist() == pa.Table.from_pylist(expected_findings, schema=ORGAN_FINDINGS_SCHEMA).to_pylist()
    assert tumors.num_rows == 3 and findings.num_rows == 3 * len(ORGANS)
    # the stored form built elsewhere (an answer process) gives the same tables, and the payload's own JSON
    from_rows = extraction_tables([(k, r, payload_rows(p)) for k, r, p in items])
    assert from_rows[0].equals(tumors) and from_rows[1].equals(findings)
    assert [payload_rows(p).payload_json for p in payloads] == [p.model_dump_json() for p in payloads]
    empty_tumors, empty_findings = extraction_tables([])
    assert (empty_tumors.schema, empty_tumors.num_rows) == (TUMORS_SCHEMA, 0)
    assert (empty_findings.schema, empty_findings.num_rows) == (ORGAN_FINDINGS_SCHEMA, 0)


def test_audit_columns_follow_the_model():
    assert AUDIT_SCHEMA.names == list(CTAudit.model_fields)
    assert not AUDIT_SCHEMA.field("ct_id").nullable and AUDIT_SCHEMA.field("report_id").nullable
    assert AUDIT_SCHEMA.field("reasons").type == pa.list_(pa.string())
    assert AUDIT_SCHEMA.field("score").type == pa.float64() and AUDIT_SCHEMA.field("n_predicted").type == pa.int32()
    row = CTAudit(ct_id="CT1", report_id="R1", score=2.5, reasons=["likely_unit_error", "count_mismatch"],
                  findings=["likely_unit_error: liver: reported 450.0 mm, predicted 44.1 mm (x10.20)"],
                  organs=["liver"], n_reported=1, n_predicted=2, reported_largest_mm=450.0, predicted_largest_mm=44.1)
    (got,) = audit_table([row]).to_pylist()
    assert got["reasons"] == ["likely_unit_error", "count_mismatch"] and got["predicted_volume_mm3"] == 0.0
    assert got == row.model_dump(mode="json")
