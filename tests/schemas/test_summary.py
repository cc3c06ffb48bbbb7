from schemas.records import ExtractionPayload
from schemas.summary import organ_summary
from schemas.vocab import ORGANS


def rows(payload: dict) -> dict[str, dict]:
    return {r["organ"]: r for r in organ_summary(ExtractionPayload.model_validate(payload))}


def measured(text, diameters):
    return {"status": "measured", "diameters_mm": diameters, "reported_text": text}


def test_one_row_per_organ_key_and_not_mentioned_by_default():
    out = organ_summary(ExtractionPayload())
    assert [r["organ"] for r in out] == list(ORGANS)
    assert {r["state"] for r in out} == {"not_mentioned"}


def test_multiple_without_number_is_lower_bound_two_and_subcentimeter_is_a_bound():
    r = rows({"tumors": [{"id": 1, "organ": "liver", "count": 2, "count_exact": False,
                          "size": {"status": "bounded", "upper_bound_mm": 10, "qualifier": "subcentimeter"}}]})
    assert (r["liver"]["lesion_count"], r["liver"]["count_is_lower_bound"]) == (2, True)
    assert (r["liver"]["largest_diameter_mm"], r["liver"]["size_bound_mm"]) == (None, 10.0)


def test_largest_diameter_ignores_prior_and_takes_location_of_largest():
    r = rows({"tumors": [
        {"id": 1, "organ": "liver", "segments": ["liver_segment_2"], "size": measured("8 mm", [8])},
        {"id": 2, "organ": "liver", "segments": ["liver_segment_6"], "attenuation": "hyper",
         "size": measured("2.2 x 1.7 cm", [22, 17]),
         "comparison": {"change": "decreased", "prior_diameters_mm": [30, 24]}},
    ]})
    liver = r["liver"]
    assert (liver["lesion_count"], liver["largest_diameter_mm"]) == (2, 22.0)
    assert (liver["largest_location"], liver["largest_attenuation"]) == ("segment_6", "hyper")


def test_paired_organ_sides_and_equivocal_and_absent():
    r = rows({
        "tumors": [
            {"id": 1, "organ": "kidney", "laterality": "right", "composition": "fat_containing",
             "size": measured("1.5 cm", [15])},
            {"id": 2, "organ": "pancreas", "presence": "possible"},
        ],
        "organs": [{"organ": "kidney", "laterality": "left", "state": "no_lesion", "surgical_state": "absent"},
                   {"organ": "spleen", "state": "no_lesion"}],
    })
    assert (r["kidney"]["state"], r["kidney"]["sides"], r["kidney"]["largest_location"]) == ("lesion", ["right"], "right")
    assert r["kidney"]["largest_attenuation"] == "fat"
    assert r["pancreas"]["state"] == "equivocal" and r["pancreas"]["lesion_count"] is None
    assert r["spleen"]["state"] == "no_lesion"


def test_resected_organ_alone_is_not_mentioned():
    r = rows({"organs": [{"organ": "gallbladder", "state": "no_lesion", "surgical_state": "absent"}]})
    assert r["gallbladder"]["state"] == "not_mentioned"


def test_gold_summaries_have_expected_shape(gold_cases):
    by_id = {c["id"]: c for c in gold_cases}
    g06 = rows(by_id["G06"]["expected"])["kidney"]
    assert (g06["lesion_count"], g06["count_is_lower_bound"], g06["largest_diameter_mm"]) == (2, True, 32.0)
    assert g06["sides"] == ["left", "right"]
    g30 = rows(by_id["G30"]["expected"])  # stones, steatosis, diverticula: nothing
    assert all(r["state"] == "not_mentioned" for r in g30.values())
