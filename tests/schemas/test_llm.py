import json
import os
import subprocess
import sys
import textwrap

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


def test_a_line_break_copied_into_a_quote_is_read_not_refused():
    from pydantic import ValidationError

    from schemas.llm import parse_llm_answer

    report = "Pancreas: 2.1 cm hypodense mass in the pancreatic\nneck. Liver: Unremarkable."
    quote = "2.1 cm hypodense mass in the pancreatic\nneck."
    answer = {"organs": [], "lesions": [lesion(organ="pancreas", quote=quote, size="2.1 cm", kind="nodule")]}
    text = json.dumps(answer).replace("\\n", "\n")  # the raw control character llama.cpp's grammar lets through
    assert "\n" in text and "\\n" not in text
    with pytest.raises(ValidationError):
        LLMAnswer.model_validate_json(text)
    assert parse_llm_answer(text).lesions[0].quote == quote
    rows, _ = summary(text, report)
    assert rows["pancreas"]["state"] == "lesion" and rows["pancreas"]["largest_diameter_mm"] == 21
    with pytest.raises(ValidationError):  # still JSON and still the schema
        parse_llm_answer(text[:-2])
    with pytest.raises(ValidationError):
        parse_llm_answer(text.replace('"nodule"', '"tumour"'))


# -- text-grounded conversion rules (own sentences, not gold reports) ----------------------------------------


def states(answer, report):
    rows, warnings = summary(answer, report)
    return {organ: row["state"] for organ, row in rows.items() if row["state"] != "not_mentioned"}, rows, warnings


def test_lesion_on_a_normal_organ_or_surgery_quote_is_dropped():
    report = "Liver: Diffuse fatty infiltration. Pancreas: Unremarkable. Status post cholecystectomy."
    answer = {"organs": [{"organ": "pancreas", "side": "both", "state": "no_lesion", "quote": "Pancreas: Unremarkable."}],
              "lesions": [lesion(organ="pancreas", kind="metastasis", quote="Pancreas: Unremarkable."),
                          lesion(organ="gallbladder", quote="Status post cholecystectomy."),
                          lesion(quote="Diffuse fatty infiltration.")]}
    found, _, warnings = states(answer, report)
    assert found == {"pancreas": "no_lesion"}
    assert sum("asserts no lesion" in w for w in warnings) == 3


def test_quote_from_elsewhere_or_about_another_organ_is_dropped():
    report = "Spleen: 2.4 cm hypodense splenic mass. Pancreas: 9 mm cyst in the pancreatic body."
    answer = {"organs": [], "lesions": [
        lesion(organ="spleen", size="2.4 cm", quote="2.4 cm hypodense splenic mass"),
        lesion(organ="kidney", side="left", quote="9 mm cyst in the pancreatic body"),
        lesion(organ="liver", quote="A focal lesion cannot be excluded on this phase."),
    ]}
    found, rows, warnings = states(answer, report)
    assert found == {"spleen": "lesion", "pancreas": "lesion"}  # the pancreas cyst from its own sentence
    assert rows["spleen"]["largest_diameter_mm"] == 24.0 and rows["pancreas"]["largest_diameter_mm"] == 9.0
    assert any("not in the report" in w for w in warnings) and any("is about ['pancreas']" in w for w in warnings)


@pytest.mark.parametrize(("sentence", "expected"), [
    ("No suspicious renal mass.", {"kidney": "no_lesion"}),
    ("The previously seen renal lesion has resolved.", {}),
    ("Kidneys are normal in size without focal lesions or hydronephrosis.", {"kidney": "no_lesion"}),
    ("Kidneys are normal in size. Mild hydronephrosis.", {}),
])
def test_negated_or_resolved_lesions_are_dropped(sentence, expected):
    answer = {"organs": [], "lesions": [lesion(organ="kidney", side="both", quote=sentence)]}
    found, _, _ = states(answer, sentence)
    assert found == expected


def test_organs_cleared_in_a_grouped_sentence_are_no_lesion_and_foreign_statements_are_ignored():
    report = "The liver, spleen and adrenal glands are unremarkable. No hydronephrosis.\nLungs: Clear."
    answer = {"organs": [{"organ": "pancreas", "side": "both", "state": "no_lesion", "quote": "No hydronephrosis."}],
              "lesions": []}
    found, _, _ = states(answer, report)
    assert found == {"liver": "no_lesion", "spleen": "no_lesion", "adrenal_gland": "no_lesion", "lung": "no_lesion"}


def test_organ_called_abnormal_without_a_lesion_entry_gets_one_from_its_quote():
    report = "Spleen: 1.8 cm hypodense lesion. Liver: Hepatic steatosis."
    answer = {"organs": [{"organ": "spleen", "side": "both", "state": "lesion", "quote": "1.8 cm hypodense lesion"},
                         {"organ": "liver", "side": "both", "state": "lesion", "quote": "Hepatic steatosis."}],
              "lesions": []}
    found, rows, _ = states(answer, report)
    assert found == {"spleen": "lesion"}
    assert (rows["spleen"]["largest_diameter_mm"], rows["spleen"]["largest_attenuation"]) == (18.0, "hypo")


@pytest.mark.parametrize(("sentence", "state"), [
    ("Adrenals: a small left adrenal nodule cannot be excluded.", "equivocal"),
    ("Questionable 4 mm hypodensity in the left adrenal gland.", "equivocal"),
    ("Left adrenal nodule measuring 1.9 cm; metastasis is not excluded.", "lesion"),
    ("Left adrenal nodule measuring 1.9 cm, possibly an adenoma.", "lesion"),
])
def test_doubt_about_existence_makes_the_organ_equivocal(sentence, state):
    answer = {"organs": [], "lesions": [lesion(organ="adrenal_gland", side="left", quote=sentence)]}
    found, _, _ = states(answer, sentence)
    assert found == {"adrenal_gland": state}


def test_model_doubt_without_doubt_words_is_not_kept():
    report = "Left kidney: 2.0 cm simple cyst."
    answer = {"organs": [], "lesions": [lesion(organ="kidney", side="none", certainty="possible", kind="cyst",
                                               size="2.0 cm", quote="2.0 cm simple cyst")]}
    found, rows, _ = states(answer, report)
    kidney = rows["kidney"]
    assert found == {"kidney": "lesion"}
    # side from the line header, cystic from the wording (the model gave no attenuation words)
    assert (kidney["largest_location"], kidney["sides"], kidney["largest_attenuation"]) == ("left", ["left"], "cystic")


def test_lingula_is_left_upper_lobe_and_single_nodule_count_is_one():
    report = "Chest: A 6 mm ground-glass nodule in the lingula. Otherwise clear lungs."
    answer = {"organs": [], "lesions": [lesion(organ="lung", side="both", count=2, count_exact=False, size="6 mm",
                                               location="lingula", quote="A 6 mm ground-glass nodule in the lingula")]}
    _, rows, _ = states(answer, report)
    lung = rows["lung"]
    assert (lung["lesion_count"], lung["count_is_lower_bound"]) == (1, False)
    assert (lung["largest_location"], lung["sides"]) == ("left_upper_lobe", ["left"])


def test_attenuation_comes_from_the_wording_not_the_model():
    report = "Liver: 3 cm heterogeneously enhancing mass in segment 2. Right kidney: 2 cm lesion containing macroscopic fat."
    answer = {"organs": [], "lesions": [
        lesion(size="3 cm", attenuation="hypo", quote="3 cm heterogeneously enhancing mass in segment 2"),
        lesion(organ="kidney", side="right", size="2 cm", attenuation="hypo", quote="2 cm lesion containing macroscopic fat"),
    ]}
    _, rows, _ = states(answer, report)
    assert rows["liver"]["largest_attenuation"] == "heterogeneous"
    assert rows["kidney"]["largest_attenuation"] == "fat"


def test_second_entry_on_the_same_single_lesion_words_is_dropped_but_groups_stay():
    report = "Right kidney: 4.1 cm enhancing mass in the lower pole. Liver: Multiple cysts, the largest 2 cm."
    answer = {"organs": [], "lesions": [
        lesion(organ="kidney", side="right", size="4.1 cm", quote="4.1 cm enhancing mass in the lower pole"),
        lesion(organ="kidney", side="left", count=2, count_exact=False, certainty="possible",
               quote="4.1 cm enhancing mass in the lower pole"),
        lesion(size="2 cm", quote="Multiple cysts, the largest 2 cm"),
        lesion(count=2, count_exact=False, quote="Multiple cysts, the largest 2 cm"),
    ]}
    _, rows, warnings = states(answer, report)
    assert (rows["kidney"]["lesion_count"], rows["kidney"]["sides"]) == (1, ["right"])
    assert rows["liver"]["lesion_count"] == 3 and rows["liver"]["count_is_lower_bound"]
    # the kidney copy, and the liver group's largest member (already the first liver entry)
    assert sum("same quote" in w or "duplicate" in w for w in warnings) == 2


def test_quote_with_small_differences_is_located_by_its_longest_part():
    from schemas.llm import locate_quote

    report = "FINDINGS:\nPancreas: 2.1 cm hypoattenuating mass in the pancreatic tail, abutting the splenic vein.\nSpleen: Normal."
    ctx = locate_quote("2.1 cm hypoattenuating mass in the pancreatic tail; abutting splenic vein", report)
    assert ctx is not None and ctx.text == "2.1 cm hypoattenuating mass in the pancreatic tail"
    assert ctx.header == "Pancreas"
    assert ctx.sentence == "Pancreas: 2.1 cm hypoattenuating mass in the pancreatic tail, abutting the splenic vein"
    assert locate_quote("Spleen: 1 cm cyst", report) is None
    cut = locate_quote("2.1 cm hypoattenuating mass in the pancreatic tail, abutting the splenic veins", report)
    assert cut is not None and cut.text == "2.1 cm hypoattenuating mass in the pancreatic tail, abutting the splenic"


def test_quote_location_is_the_same_for_ascii_and_other_reports():
    from schemas.llm import _normalised_chars, _normalised_with_index, locate_quote

    for text in ["", "  Liver:\t2 cm  LESION.\r\n\nSpleen: ok  ", "a\x1c\x1db  c\x0b", "X" * 3]:
        assert _normalised_with_index(text) == _normalised_chars(text)
    report = "FINDINGS:\nLiver:  2.2 cm   HYPODENSE lesion in segment 8. Spleen: normal.\nIMPRESSION: Cyst."
    ctx = locate_quote("2.2 cm hypodense lesion", report)
    assert (ctx.text, ctx.sentence, ctx.header) == ("2.2 cm   HYPODENSE lesion",
                                                    "Liver:  2.2 cm   HYPODENSE lesion in segment 8", "Liver")
    assert locate_quote("2.2 cm hypodense lesion", report) == ctx  # the report's index is reused
    assert locate_quote("Cyst", report).sentence == "IMPRESSION: Cyst"
    # Non-ASCII: casefolding changes lengths ("ß" -> "ss"); offsets still point into the NFKC report.
    other = "Leber:\u00a0Straße 2 cm Läsion; ﬁbrous CYST in segment 4."
    ctx = locate_quote("strasse 2 cm läsion", other)
    assert ctx.text == "Straße 2 cm Läsion" and ctx.sentence == "Leber: Straße 2 cm Läsion"
    assert locate_quote("fibrous cyst", other).text == "fibrous CYST"


def test_impression_repeat_is_one_lesion_but_a_new_sized_lesion_stays():
    report = ("FINDINGS: Pancreas: 3.0 cm hypoenhancing mass in the pancreatic head. Liver: 8 mm cyst in segment 3.\n"
              "IMPRESSION: Pancreatic head mass. 1.5 cm liver metastasis in segment 6.")
    answer = {"organs": [], "lesions": [
        lesion(organ="pancreas", size="3.0 cm", location="pancreatic head",
               quote="3.0 cm hypoenhancing mass in the pancreatic head"),
        lesion(size="8 mm", kind="cyst", location="segment 3", quote="8 mm cyst in segment 3"),
        lesion(organ="pancreas", location="pancreatic head", quote="Pancreatic head mass."),
        lesion(size="1.5 cm", location="segment 6", quote="1.5 cm liver metastasis in segment 6"),
    ]}
    _, rows, warnings = states(answer, report)
    assert (rows["pancreas"]["lesion_count"], rows["pancreas"]["largest_diameter_mm"]) == (1, 30.0)
    assert (rows["liver"]["lesion_count"], rows["liver"]["largest_location"]) == (2, "segment_6")
    assert sum("impression repeats" in w for w in warnings) == 1


def test_history_and_origin_wording_is_not_a_current_lesion():
    report = ("CLINICAL HISTORY: Renal cell carcinoma status post left nephrectomy.\n"
              "FINDINGS: Pancreas: 1.2 cm enhancing lesion in the pancreatic tail, suspicious for metastatic renal cell "
              "carcinoma. Liver: The known 2.3 cm liver metastasis in segment 6 has grown.")
    answer = {"organs": [], "lesions": [
        lesion(organ="kidney", side="left", quote="Renal cell carcinoma status post left nephrectomy"),
        lesion(organ="kidney", quote="suspicious for metastatic renal cell carcinoma"),
        lesion(organ="pancreas", size="1.2 cm", quote="1.2 cm enhancing lesion in the pancreatic tail"),
        lesion(size="2.3 cm", quote="The known 2.3 cm liver metastasis in segment 6 has grown"),
    ]}
    found, rows, warnings = states(answer, report)
    assert found == {"pancreas": "lesion", "liver": "lesion"}
    assert rows["liver"]["largest_diameter_mm"] == 23.0
    assert any("history/technique" in w for w in warnings)


def test_longest_answer_the_schema_allows_fits_the_token_budget():
    """A model that repeats entries until every array and string is full of report-like words still ends
    inside the budget (measured with the embedded model's tokenizer)."""
    from pathlib import Path

    from schemas.llm import ANSWER_TOKEN_BUDGET, MAX_LESIONS, MAX_ORGANS, LLMLesion, LLMOrgan

    llama_cpp = pytest.importorskip("llama_cpp")
    gguf = Path.home() / ".cache" / "rsuper" / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    if not gguf.is_file():
        pytest.skip("embedded model not joined yet")
    tokenizer = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)

    words = "hypodense lesion in the right lobe of the liver measuring 3.6 x 3.3 x 3.1 cm, previously 2.2 cm "

    def longest(model, field):
        return (words * 4)[: model.model_fields[field].metadata[0].max_length]

    organ = {"organ": "adrenal_gland", "quote": longest(LLMOrgan, "quote"), "side": "right", "state": "no_lesion"}
    item = {"organ": "adrenal_gland", "quote": longest(LLMLesion, "quote"), "side": "right",
            "location": longest(LLMLesion, "location"), "size": longest(LLMLesion, "size"),
            "size_bound": "subcentimeter", "count": 99, "count_exact": False, "attenuation": "heterogeneous",
            "kind": "pancreatic_neuroendocrine_tumor", "certainty": "probable"}
    text = json.dumps({"organs": [organ] * MAX_ORGANS, "lesions": [item] * MAX_LESIONS})
    LLMAnswer.model_validate_json(text)
    assert len(tokenizer.tokenize(text.encode(), add_bos=False)) < ANSWER_TOKEN_BUDGET


def test_sentence_asserting_a_lesion_the_answer_left_out_becomes_a_record():
    report = ("Liver: 2.1 cm hypodense lesion in segment 7. Left kidney: 1.4 cm simple cyst. Right kidney: Normal.\n"
              "Pancreatic head mass invading the duodenum.")
    answer = {"organs": [], "lesions": [lesion(size="2.1 cm", quote="2.1 cm hypodense lesion in segment 7")]}
    found, rows, warnings = states(answer, report)
    # the two-organ sentence is left to the model; the kidney sentence names one organ and one side
    assert found == {"liver": "lesion", "kidney": "lesion"}
    kidney = rows["kidney"]
    assert (kidney["lesion_count"], kidney["largest_diameter_mm"], kidney["sides"]) == (1, 14.0, ["left"])
    assert kidney["largest_attenuation"] == "cystic"
    assert sum("left out" in w for w in warnings) == 1


@pytest.mark.parametrize(("report", "organ", "expected"), [
    ("Liver: Two hemangiomas, measuring 1.1 cm in segment 2 and 3.4 cm in segment 7.", "liver", (2, 34.0, "segment_7")),
    ("Adrenals: Bilateral adrenal nodules, right 1.4 cm and left 2.6 cm.", "adrenal_gland", (2, 26.0, "left")),
    ("Lungs: Multiple bilateral nodules, the largest 1.8 cm in the right lower lobe.", "lung",
     (3, 18.0, "right_lower_lobe")),
])
def test_group_members_sized_one_by_one_are_split(report, organ, expected):
    answer = {"organs": [], "lesions": [lesion(organ=organ, side="both", count=2, count_exact=False,
                                               quote=report.split(": ", 1)[1])]}
    _, rows, _ = states(answer, report)
    row = rows[organ]
    assert (row["lesion_count"], row["largest_diameter_mm"], row["largest_location"]) == expected


def test_single_lesion_with_a_component_size_is_not_split():
    report = "An 8 mm part-solid nodule in the lingula with a 3 mm solid component."
    answer = {"organs": [], "lesions": [lesion(organ="lung", size="8 mm", quote=report)]}
    _, rows, _ = states(answer, report)
    assert (rows["lung"]["lesion_count"], rows["lung"]["largest_diameter_mm"]) == (1, 8.0)


def test_sentences_read_clause_by_clause_and_across_a_semicolon():
    report = ("New 1.3 cm enhancing splenic lesion and new 9 mm left adrenal nodule, both suspicious for metastases. "
              "Subtle hypoenhancing area in the pancreatic tail; a small mass cannot be excluded.")
    found, rows, _ = states({"organs": [], "lesions": []}, report)
    assert found == {"spleen": "lesion", "adrenal_gland": "lesion", "pancreas": "equivocal"}
    assert (rows["adrenal_gland"]["largest_diameter_mm"], rows["adrenal_gland"]["sides"]) == (9.0, ["left"])
    assert rows["spleen"]["largest_attenuation"] == "hyper"


def test_prior_size_in_the_quote_is_not_the_current_one():
    report = "Liver: The segment 4 metastasis now measures 1.9 cm, previously 2.5 cm."
    answer = {"organs": [], "lesions": [lesion(kind="metastasis", quote=report.split(": ", 1)[1])]}
    _, rows, _ = states(answer, report)
    assert rows["liver"]["largest_diameter_mm"] == 19.0


@pytest.mark.parametrize(("report", "organ", "location", "size"), [
    ("Liver: Numerous hypodense lesions. The largest in segment 8 measures 3.2 cm (previously 2.0 cm).", "liver",
     "segment_8", 32.0),
    ("Kidneys: Multiple bilateral renal cysts measuring up to 3.1 cm on the right.", "kidney", "right", 31.0),
])
def test_largest_member_of_a_group_gives_location_and_size(report, organ, location, size):
    _, rows, _ = states({"organs": [], "lesions": []}, report)
    row = rows[organ]
    assert (row["largest_location"], row["largest_diameter_mm"], row["count_is_lower_bound"]) == (location, size, True)


def test_model_size_that_is_a_prior_size_is_replaced_by_the_current_one():
    report = "Liver: Segment 7 lesion previously measuring 2.5 cm now measures 1.4 cm after ablation."
    answer = {"organs": [], "lesions": [lesion(size="2.5 cm", location="segment 7", quote=report.split(": ", 1)[1])]}
    _, rows, warnings = states(answer, report)
    assert rows["liver"]["largest_diameter_mm"] == 14.0
    assert any("prior size" in w for w in warnings)


def test_organs_cleared_together_come_in_vocabulary_order_whatever_the_hash_seed():
    # Set iteration order over str enums follows PYTHONHASHSEED; the stored payload must not.
    code = textwrap.dedent("""
        from schemas.llm import LLMAnswer, to_payload
        report = "The spleen, kidneys, adrenal glands, pancreas and liver are unremarkable."
        payload, _ = to_payload(LLMAnswer.model_validate({"organs": [], "lesions": []}), report)
        print(",".join(o.organ for o in payload.organs))
    """)
    orders = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONHASHSEED": str(seed)}, check=True).stdout.strip()
              for seed in range(4)}
    assert orders == {"liver,pancreas,kidney,spleen,adrenal_gland"}
