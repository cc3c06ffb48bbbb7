import json

import pytest

from schemas.llm import LLMAnswer, llm_json_schema, schema_fingerprint, to_payload
from schemas.summary import organ_summary

FORBIDDEN = {"allOf", "anyOf", "oneOf", "uniqueItems", "multipleOf", "not", "if", "patternProperties"}


def walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def test_schema_is_compact_bounded_and_free_of_unsupported_keywords():
    schema = llm_json_schema()
    assert len(schema_fingerprint()) < 4000
    for node in walk(schema):
        assert not FORBIDDEN & set(node), node
        if node.get("type") == "array":
            assert "maxItems" in node
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node


def test_schema_compiles_with_xgrammar():
    xgr = pytest.importorskip("xgrammar")
    vocab = [f"<t{i}>" for i in range(32)] + list('abcdefghijklmnopqrstuvwxyz{}[]":,0123456789 .-_')
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo(vocab))
    compiler.compile_json_schema(json.dumps(llm_json_schema()))


def lesion(**kw):
    base = {"organ": "liver", "side": "none", "location": "", "count": 1, "count_exact": True, "size": "",
            "size_bound": "none", "attenuation": "unknown", "kind": "lesion_unspecified", "certainty": "definite",
            "quote": ""}
    base.update(kw)
    return base


def summary(answer, report):
    payload, warnings = to_payload(answer, report)
    return {r["organ"]: r for r in organ_summary(payload)}, warnings


def test_conversion_parses_size_in_code_and_maps_location():
    report = "FINDINGS: 2.8 x 2.1 cm hypoattenuating mass in the pancreatic head.\nIMPRESSION: Pancreatic head mass."
    answer = {"organs": [], "lesions": [
        lesion(organ="pancreas", location="pancreatic head", size="2.8 x 2.1 cm",
               quote="2.8 x 2.1 cm hypoattenuating mass in the pancreatic head"),
        lesion(organ="pancreas", location="pancreatic head", size="2.8 x 2.1 cm", quote="Pancreatic head mass."),
    ]}
    rows, warnings = summary(answer, report)
    p = rows["pancreas"]
    assert (p["state"], p["lesion_count"], p["largest_diameter_mm"]) == ("lesion", 1, 28.0)
    assert (p["largest_location"], p["largest_attenuation"]) == ("head", "hypo")
    assert any("duplicate" in w for w in warnings)


def test_size_not_in_report_is_ignored_and_stones_are_dropped():
    report = "Liver: 9 mm hypodense focus in segment 7. Nonobstructing 3 mm left renal calculus."
    answer = {"organs": [{"organ": "kidney", "side": "left", "state": "lesion", "quote": "left renal calculus"}],
              "lesions": [lesion(size="0.9 cm", location="segment 7", quote="9 mm hypodense focus in segment 7"),
                          lesion(organ="kidney", side="left", size="3 mm", quote="Nonobstructing 3 mm left renal calculus")]}
    rows, warnings = summary(answer, report)
    assert rows["liver"]["largest_diameter_mm"] is None and rows["liver"]["largest_location"] == "segment_7"
    assert rows["kidney"]["state"] == "not_mentioned"
    assert len(warnings) == 3


def test_multiple_without_number_and_normal_lymph_nodes():
    report = "Several subcentimeter hepatic hypodensities. No enlarged lymph nodes. Small periportal lymph nodes."
    answer = {"organs": [{"organ": "lymph_node", "side": "both", "state": "no_lesion", "quote": "No enlarged lymph nodes."}],
              "lesions": [lesion(count=1, count_exact=False, quote="Several subcentimeter hepatic hypodensities."),
                          lesion(organ="lymph_node", quote="Small periportal lymph nodes.")]}
    rows, _ = summary(answer, report)
    liver = rows["liver"]
    assert (liver["lesion_count"], liver["count_is_lower_bound"], liver["size_bound_mm"]) == (2, True, 10.0)
    assert rows["lymph_node"]["state"] == "no_lesion"


def test_bad_json_raises_validation_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        to_payload('{"organs": [], "lesions": [{"organ": "heart"}]}', "text")
    with pytest.raises(ValidationError):
        LLMAnswer.model_validate_json('{"organs": [')
