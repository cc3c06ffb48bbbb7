import copy

import pytest
from pydantic import ValidationError

from schemas.records import ExtractionPayload

REPORT = "Liver: 1.2 x 0.8 cm hypodense lesion in segment 7, likely a cyst. Pancreas: unremarkable."


def payload(**tumor_overrides):
    tumor = {
        "id": 1, "organ": "liver", "segments": ["liver_segment_7"], "lesion_type": "cyst",
        "type_certainty": "probable", "attenuation": "hypo",
        "size": {"status": "measured", "diameters_mm": [12, 8], "reported_text": "1.2 x 0.8 cm"},
        "evidence": ["1.2 x 0.8 cm hypodense lesion in segment 7"],
    }
    tumor.update(tumor_overrides)
    return {"tumors": [tumor], "organs": [
        {"organ": "liver", "state": "lesion_present", "lesion_count": 1},
        {"organ": "pancreas", "state": "no_lesion", "evidence": ["Pancreas: unremarkable."]},
    ]}


def test_all_gold_cases_validate_against_their_reports(gold_cases):
    for case in gold_cases:
        ExtractionPayload.model_validate(case["expected"], context={"report_text": case["report"]})
    assert len(gold_cases) == 40


def test_valid_payload_fills_implied_fields():
    p = ExtractionPayload.model_validate(payload(), context={"report_text": REPORT})
    assert p.tumors[0].malignancy == "benign"
    assert p.tumors[0].composition == "cystic"
    assert p.organs[1].lesion_count == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"segments": ["pancreas_head"]}, "do not belong"),
        ({"size": {"status": "measured", "diameters_mm": [12, 80], "reported_text": "1.2 x 0.8 cm"}}, "do not match"),
        ({"size": {"status": "measured", "diameters_mm": [395], "reported_text": "39.5 cm"}}, "implausible"),
        ({"malignancy": "malignant"}, "implies benign"),
        ({"organ": "kidney", "segments": [], "laterality": "bilateral"}, "cannot be bilateral"),
        ({"evidence": ["2 cm mass in segment 7"]}, "not a verbatim quote"),
        ({"lesion_type": "renal_cell_carcinoma"}, "not a lesion type"),
        ({"size": {"status": "measured", "diameters_mm": [12]}}, "reported_text"),
        ({"size": {"status": "bounded"}}, "upper_bound_mm"),
    ],
)
def test_rejections(overrides, message):
    with pytest.raises(ValidationError, match=message):
        ExtractionPayload.model_validate(payload(**overrides), context={"report_text": REPORT})


def test_organ_state_must_agree_with_records():
    bad = payload()
    bad["organs"][0]["state"] = "no_lesion"
    bad["organs"][0]["lesion_count"] = None
    with pytest.raises(ValidationError, match="is no_lesion but has tumor records"):
        ExtractionPayload.model_validate(bad)
    lonely = copy.deepcopy(payload())
    lonely["tumors"] = []
    with pytest.raises(ValidationError, match="no tumor record lies in it"):
        ExtractionPayload.model_validate(lonely)


def test_missing_organ_status_is_added_for_records():
    p = ExtractionPayload.model_validate({"tumors": payload()["tumors"], "organs": []})
    assert [(o.organ.value, o.state) for o in p.organs] == [("liver", "lesion_present")]
