from schemas.records import ExtractionPayload
from train.data.records import load_case_records, records_from_ground_truth


class _FakeStore:
    """Stands in for extract.store.Store: only the read call load_case_records uses."""

    def __init__(self, payloads):
        self.payloads = payloads

    def tumor_payloads(self, report_ids):
        return {r: self.payloads[r] for r in report_ids if r in self.payloads}


def test_payload_becomes_case_records():
    payload = ExtractionPayload.model_validate({
        "tumors": [
            {"id": 1, "organ": "liver", "segments": ["liver_segment_7"], "attenuation": "hypo",
             "size": {"status": "measured", "diameters_mm": [23.0, 18.0], "reported_text": "2.3 x 1.8 cm"}},
            {"id": 2, "organ": "kidney", "laterality": "left", "presence": "possible"},
        ],
        "organs": [{"organ": "pancreas", "state": "no_lesion"}],
    })
    store = _FakeStore({"A1": payload.model_dump_json()})
    rec = load_case_records(store, ["A1", "MISSING"])
    assert list(rec) == ["A1"]
    (t,) = rec["A1"].tumors
    assert t.organ == "liver" and t.segments == ("liver_segment_7",) and t.diameters_mm == (23.0, 18.0)
    assert t.attenuation == "hypo" and "pancreas" in rec["A1"].lesion_free and "kidney_left" in rec["A1"].equivocal


def test_ground_truth_records_convert(phantom_set):
    rec = records_from_ground_truth(phantom_set / "ground_truth.jsonl")
    assert len(rec) == 5 and all(r.tumors for r in rec.values())
