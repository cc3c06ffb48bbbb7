import json
import os
import subprocess
import sys
import textwrap

import pytest

from extract.reading.convert import to_payload
from schemas.summary import organ_summary


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
    # the answer's 0.9 cm is not in the report; the report's own words size the focus
    assert rows["liver"]["largest_diameter_mm"] == 9.0 and rows["liver"]["largest_location"] == "segment_7"
    assert rows["kidney"]["state"] == "not_mentioned"
    assert any("size '0.9 cm' is not in the report" in w for w in warnings)
    assert any("lesion 2 (kidney)" in w and "dropped" in w for w in warnings)


def test_multiple_without_number_and_normal_lymph_nodes():
    report = "Several subcentimeter hepatic hypodensities. No enlarged lymph nodes. Small periportal lymph nodes."
    answer = {"organs": [{"organ": "lymph_node", "side": "both", "state": "no_lesion", "quote": "No enlarged lymph nodes."}],
              "lesions": [lesion(count=1, count_exact=False, quote="Several subcentimeter hepatic hypodensities."),
                          lesion(organ="lymph_node", quote="Small periportal lymph nodes.")]}
    rows, _ = summary(answer, report)
    liver = rows["liver"]
    assert (liver["lesion_count"], liver["count_is_lower_bound"], liver["size_bound_mm"]) == (2, True, 10.0)
    assert rows["lymph_node"]["state"] == "no_lesion"


def test_answer_outside_the_schema_raises_validation_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        to_payload('{"organs": [], "lesions": [{"organ": "heart"}]}', "text")


def test_a_line_break_copied_into_a_quote_is_converted():
    report = "Pancreas: 2.1 cm hypodense mass in the pancreatic\nneck. Liver: Unremarkable."
    quote = "2.1 cm hypodense mass in the pancreatic\nneck."
    answer = {"organs": [], "lesions": [lesion(organ="pancreas", quote=quote, size="2.1 cm", kind="nodule")]}
    text = json.dumps(answer).replace("\\n", "\n")  # the raw control character llama.cpp's grammar lets through
    rows, _ = summary(text, report)
    assert rows["pancreas"]["state"] == "lesion" and rows["pancreas"]["largest_diameter_mm"] == 21


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
    ("The left renal lesion has cleared completely.", {}),
    ("Kidneys are normal in size without focal lesions or hydronephrosis.", {"kidney": "no_lesion"}),
    ("Kidneys are normal in size. Mild hydronephrosis.", {"kidney": "no_lesion"}),  # spoken of, no lesion
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


def test_a_second_entry_on_the_same_words_is_dropped_and_a_group_counts_at_least_two():
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
    # "Multiple cysts, the largest 2 cm": at least two, whichever entry says so first
    assert rows["liver"]["lesion_count"] == 2 and rows["liver"]["count_is_lower_bound"]
    # the kidney copy, and the liver group's largest member (already the first liver entry)
    assert sum("same quote" in w or "duplicate" in w for w in warnings) == 2


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
    # "multiple ..., the largest ...": the largest plus at least one more, a lower bound of 2 (the gold convention)
    ("Lungs: Multiple bilateral nodules, the largest 1.8 cm in the right lower lobe.", "lung",
     (2, 18.0, "right_lower_lobe")),
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
        from extract.reading.convert import to_payload
        from schemas.llm import LLMAnswer
        report = "The spleen, kidneys, adrenal glands, pancreas and liver are unremarkable."
        payload, _ = to_payload(LLMAnswer.model_validate({"organs": [], "lesions": []}), report)
        print(",".join(o.organ for o in payload.organs))
    """)
    orders = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONHASHSEED": str(seed)}, check=True).stdout.strip()
              for seed in range(4)}
    assert orders == {"liver,pancreas,kidney,spleen,adrenal_gland"}


# -- lists: the sentence that opens one is its count, not more lesions ------------------------------------------
# Reports written for these tests, in the layouts of tests/extract/test_counts_gold.py's set (never read from it).

EMPTY = {"organs": [], "lesions": []}


def test_a_stated_number_opening_a_list_is_the_count_of_its_lines():
    report = ("FINDINGS:\nLungs: Four nodules are followed, each with its prior size:\n"
              "- Right upper lobe: 6 mm solid nodule (series 2, image 40), previously 5 mm.\n"
              "- Left upper lobe: 4 mm solid nodule (series 2, image 71), unchanged.\n"
              "- Left lower lobe: 8 mm part-solid nodule (series 2, image 190), previously 7 mm.\n"
              "No new nodule.\nIMPRESSION: Four pulmonary nodules, the largest 8 mm.")
    rows, warnings = summary(EMPTY, report)
    lung = rows["lung"]
    # three lines sized, the fourth stated by the number: an unsized rest, exact
    assert (lung["lesion_count"], lung["count_is_lower_bound"], lung["largest_diameter_mm"]) == (4, False, 8.0)
    assert lung["largest_location"] == "left_lower_lobe"
    assert any("introduces a list of 3 and 1 more" in w for w in warnings)


def test_bare_list_lines_become_members_and_resolve_several():
    report = ("FINDINGS:\nLiver: Cirrhotic morphology. Several arterially enhancing lesions are seen:\n"
              "- Segment 6: 2.2 x 1.9 cm (series 5, image 30), with arterial hyperenhancement and washout.\n"
              "- Segment 4A: 1.1 cm (series 5, image 12), arterial hyperenhancement only.\n"
              "- Segment 2: 8 mm (series 5, image 22).\n"
              "Spleen: Normal.")
    rows, _ = summary(EMPTY, report)
    liver = rows["liver"]
    assert (liver["lesion_count"], liver["count_is_lower_bound"]) == (3, False)
    assert (liver["largest_diameter_mm"], liver["largest_location"]) == (22.0, "segment_6")


def test_at_least_n_stays_a_lower_bound_beyond_its_listed_largest():
    report = ("FINDINGS:\nLungs: At least six pulmonary nodules are present. The two largest are in the right lower "
              "lobe, 1.2 cm (series 3, image 200); and in the left upper lobe, 7 mm (series 3, image 61).")
    rows, _ = summary(EMPTY, report)
    lung = rows["lung"]
    assert (lung["lesion_count"], lung["count_is_lower_bound"], lung["largest_diameter_mm"]) == (6, True, 12.0)


def test_a_resolved_line_and_an_including_list_are_not_taken_as_members():
    report = ("FINDINGS:\nLungs: Pulmonary nodules are listed as on the prior report:\n"
              "- Right upper lobe: 5 mm (series 4, image 50), unchanged.\n"
              "- Right middle lobe: the 4 mm nodule seen previously has resolved.\n"
              "Kidneys: Multiple bilateral cysts, including a 2.4 cm cyst in the left lower pole.")
    rows, _ = summary(EMPTY, report)
    assert (rows["lung"]["lesion_count"], rows["lung"]["count_is_lower_bound"]) == (1, False)
    assert rows["kidney"]["count_is_lower_bound"] is True and rows["kidney"]["lesion_count"] >= 2


def test_a_group_beside_a_sized_mass_counts_and_a_back_reference_does_not():
    report = ("FINDINGS:\nLungs: A 3.1 cm spiculated mass in the left upper lobe (series 4, image 70). At least "
              "four additional solid nodules are scattered through both lungs.\n"
              "Pelvis: Bilateral solid adnexal masses, the right 6.2 cm and the left 4.0 cm. The uterus is displaced "
              "by the adnexal masses.")
    rows, _ = summary(EMPTY, report)
    assert (rows["lung"]["lesion_count"], rows["lung"]["count_is_lower_bound"]) == (5, True)
    assert rows["ovary_adnexa"]["lesion_count"] == 2


def test_the_impression_repeating_a_sized_finding_by_its_largest_axis_adds_nothing():
    report = ("FINDINGS:\nKidneys: A 5.6 x 4.9 x 4.2 cm enhancing mass in the right lower pole. A 1.2 cm simple cyst "
              "in the left kidney.\nIMPRESSION:\n1. 5.6 cm right renal mass, likely renal cell carcinoma.\n"
              "2. Simple left renal cyst and the right renal mass, both described above, bilateral findings.")
    rows, _ = summary(EMPTY, report)
    assert rows["kidney"]["lesion_count"] == 2


def test_index_lesions_name_some_of_an_earlier_group_which_stays_a_lower_bound():
    report = ("FINDINGS:\nLiver: Numerous hypoattenuating metastases are again seen. Index lesions: segment 6, 4.1 cm "
              "(previously 3.8 cm); segment 2, 2.0 cm (previously 2.2 cm).\nSpleen: Normal.")
    rows, _ = summary(EMPTY, report)
    liver = rows["liver"]
    assert (liver["lesion_count"], liver["count_is_lower_bound"]) == (2, True)
    assert (liver["largest_diameter_mm"], liver["largest_location"]) == (41.0, "segment_6")


def test_a_list_opened_after_the_organ_sentence_keeps_the_organ():
    report = ("FINDINGS:\nLiver: Nodular cirrhotic contour. Two observations are seen:\n"
              "- Segment 7: 2.9 cm (series 6, image 33), LI-RADS 5.\n- Segment 3: 1.2 cm (series 6, image 50), LI-RADS 4.\n"
              "Spleen: Mildly enlarged.")
    rows, _ = summary(EMPTY, report)
    liver = rows["liver"]
    assert (liver["lesion_count"], liver["count_is_lower_bound"], liver["largest_location"]) == (2, False, "segment_7")


def test_an_additional_group_after_a_list_is_its_own_and_both_lobes_name_the_lung():
    report = ("FINDINGS:\nLungs: Treated right lower lobe metastasis has been replaced by fibrosis. Nodules elsewhere:\n"
              "* Left upper lobe: 8 mm (series 4, image 50), previously 6 mm.\n"
              "* Right upper lobe: 5 mm (series 4, image 41), new.\n"
              "In addition, a few tiny nodules under 3 mm in both lower lobes are unchanged.")
    rows, _ = summary(EMPTY, report)
    lung = rows["lung"]
    assert (lung["lesion_count"], lung["count_is_lower_bound"], lung["largest_diameter_mm"]) == (4, True, 8.0)


def test_a_number_followed_by_its_lesions_in_prose_counts_them_once():
    report = ("FINDINGS:\nChest: There are now six pulmonary nodules, compared with three previously. The three new "
              "nodules are in the right middle lobe (5 mm), the left upper lobe (4 mm) and the left lower lobe (7 mm). "
              "Of the known nodules, the right upper lobe nodule measures 13 mm (previously 10 mm) and the two "
              "lingular nodules measure 6 mm and 3 mm.\n"
              "Kidneys: Two cysts in the left kidney, up to 9 mm. A 3.4 cm solid mass in the right lower pole.")
    rows, _ = summary(EMPTY, report)
    assert (rows["lung"]["lesion_count"], rows["lung"]["count_is_lower_bound"]) == (6, False)
    assert rows["lung"]["largest_diameter_mm"] == 13.0
    assert rows["kidney"]["lesion_count"] == 3  # a mass is not one of "two cysts"


def test_numbers_in_words_go_past_ten():
    from extract.reading.lesion_words import stated_count

    assert stated_count("At least twelve hypoattenuating lesions") == (12, False)
    assert stated_count("a dozen small cysts") == (12, True)


def test_lobe_abbreviations_and_a_back_reference():
    report = ("FINDINGS:\nNODULES:\nNodule 1: RUL posterior segment, solid, 8 mm (se 2 im 60). Growing.\n"
              "Nodule 2: LLL superior segment, solid, 4 mm (se 2 im 110). Stable.\n"
              "Liver: A 2.2 cm metastasis in segment 6 and a 1.1 cm metastasis in segment 8. The liver metastases "
              "are hypodense.")
    rows, _ = summary(EMPTY, report)
    lung, liver = rows["lung"], rows["liver"]
    assert (lung["lesion_count"], lung["largest_location"], lung["sides"]) == (2, "right_upper_lobe", ["left", "right"])
    assert (liver["lesion_count"], liver["count_is_lower_bound"]) == (2, False)


def test_a_generic_number_takes_specific_members_but_cysts_are_not_a_mass():
    report = ("FINDINGS:\nAdrenal glands: The left adrenal gland contains two nodules. The medial limb nodule measures "
              "1.0 cm, in keeping with a lipid-rich adenoma. The lateral limb nodule measures 2.4 cm and is "
              "heterogeneous.\nKidneys: Two cysts in the left kidney, up to 8 mm. A 3.0 cm solid mass in the left "
              "lower pole.")
    rows, _ = summary(EMPTY, report)
    assert rows["adrenal_gland"]["lesion_count"] == 2
    assert rows["kidney"]["lesion_count"] == 3


def test_another_lesion_or_one_in_another_lobe_adds_to_the_count_in_prose():
    report = ("FINDINGS:\nA new solid nodule sits in the anterior segment of the right upper lobe (series 4, image 60)."
              " "
              "Another nodule, smaller, is seen in the right middle lobe. In the left lower lobe there is a 6 mm "
              "nodule (series 4, image 140). An additional 3 mm nodule lies close to it in the same lobe.\n"
              "IMPRESSION:\nFour pulmonary nodules, two of them new.")
    rows, _ = summary(EMPTY, report)
    assert (rows["lung"]["lesion_count"], rows["lung"]["count_is_lower_bound"]) == (4, False)
    assert rows["lung"]["largest_diameter_mm"] == 6.0


def test_a_second_mention_of_the_same_lobe_is_the_same_nodule():
    report = ("FINDINGS:\nThe right lower lobe holds a 9 mm spiculated nodule (series 3, image 120). The nodule in the "
              "right lower lobe abuts the major fissure.")
    rows, _ = summary(EMPTY, report)
    assert rows["lung"]["lesion_count"] == 1


def test_a_section_label_naming_nodes_does_not_make_one_node_a_group():
    report = ("FINDINGS:\nLymph nodes: An enlarged subcarinal node measures 16 mm in short axis. A right hilar node "
              "is also enlarged, at 12 mm. None of the paratracheal nodes is enlarged.")
    rows, _ = summary(EMPTY, report)
    node = rows["lymph_node"]
    assert (node["lesion_count"], node["count_is_lower_bound"], node["largest_diameter_mm"]) == (2, False, 16.0)


def test_a_node_named_after_its_organ_is_a_node_and_an_axillary_node_is_no_breast_lesion():
    report = ("FINDINGS:\nLymph nodes: A 10 mm periesophageal node with a necrotic centre is suspicious. An enlarged "
              "left gastric node measures 14 mm in short axis.\n"
              "Breasts and axillae: A 2.1 cm irregular mass in the left breast. In the left axilla, a 1.9 cm lymph "
              "node with a thickened cortex is suspicious for a metastasis.")
    misread = {"organs": [], "lesions": [  # a small model's answer: the nodes given to the organs they lie by
        lesion(organ="breast", side="left", quote="In the left axilla, a 1.9 cm lymph node with a thickened cortex"),
        lesion(organ="stomach", quote="An enlarged left gastric node measures 14 mm in short axis")]}
    rows, _ = summary(misread, report)
    assert (rows["lymph_node"]["lesion_count"], rows["lymph_node"]["largest_diameter_mm"]) == (3, 19.0)
    assert (rows["breast"]["lesion_count"], rows["breast"]["largest_diameter_mm"]) == (1, 21.0)
    assert rows.get("stomach", {}).get("state", "not_mentioned") != "lesion"


def test_none_of_the_nodes_enlarged_is_a_negative_and_a_conglomerate_nodal_mass_is_a_node():
    report = ("FINDINGS:\nMediastinum: A conglomerate nodal mass of 6.2 cm fills the anterior mediastinum. None of the "
              "hilar lymph nodes is enlarged.")
    rows, _ = summary(EMPTY, report)
    assert (rows["lymph_node"]["lesion_count"], rows["lymph_node"]["largest_diameter_mm"]) == (1, 62.0)
    rows, _ = summary(EMPTY, "FINDINGS:\nNone of the mediastinal or hilar lymph nodes is enlarged.")
    assert rows["lymph_node"]["state"] != "lesion"


def test_it_measures_sizes_the_lesion_before_and_a_component_size_is_not_the_lesions():
    report = ("FINDINGS:\nLungs: Innumerable nodules fill both lungs. The largest is in the left upper lobe. It now "
              "measures 18 mm (series 4, image 40), up from 12 mm.\n"
              "Right lower lobe: a part-solid nodule now measures 16 mm overall, with a solid component of 7 mm.")
    rows, _ = summary(EMPTY, report)
    lung = rows["lung"]
    assert (lung["largest_diameter_mm"], lung["largest_location"]) == (18.0, "left_upper_lobe")
    from extract.reading.measurements import current_measurements

    assert [m.text for m in current_measurements("a nodule of 16 mm with a solid component of 7 mm")] == ["16 mm"]


def test_the_impression_sizes_the_nodules_the_findings_left_unsized_and_no_sized_one_twice():
    report = ("FINDINGS:\nThere is a new nodule in the lateral basal segment of the right lower lobe. Another new "
              "nodule is seen in the right middle lobe.\nIMPRESSION:\n1. Two new nodules in the right lung, measuring "
              "9 mm in the right lower lobe and 4 mm in the right middle lobe.")
    rows, warnings = summary(EMPTY, report)
    lung = rows["lung"]
    assert (lung["lesion_count"], lung["largest_diameter_mm"], lung["largest_location"]) == (2, 9.0, "right_lower_lobe")
    assert sum("sized by the impression" in w for w in warnings) == 2
    report = ("FINDINGS:\nLungs: At least four nodules. The largest is in the left lower lobe, 1.2 cm (series 3, image "
              "90).\nIMPRESSION:\n1. At least four pulmonary nodules; the largest, in the left lower lobe, measures "
              "1.2 cm.")
    rows, _ = summary(EMPTY, report)
    assert (rows["lung"]["largest_location"], rows["lung"]["largest_diameter_mm"]) == ("left_lower_lobe", 12.0)


def test_lesions_described_one_by_one_after_the_organ_or_it_are_counted():
    report = ("FINDINGS:\nThe liver is cirrhotic. In segment 7 there is a 4.1 cm arterially enhancing observation. "
              "Just anterior to it lie two smaller satellite nodules, measuring 8 mm and 10 mm. A 1.8 cm "
              "hypoattenuating lesion has appeared in segment 2. Another, 6 mm, lies in segment 3. The 9 mm lesion in "
              "segment 5 seen before is no longer visible.")
    rows, _ = summary(EMPTY, report)
    liver = rows["liver"]
    assert (liver["lesion_count"], liver["count_is_lower_bound"], liver["largest_diameter_mm"]) == (5, False, 41.0)


def test_a_bare_plural_is_resolved_by_the_lesions_described_after_it_but_several_is_not():
    report = ("FINDINGS:\nAdrenal glands: Both adrenal glands contain nodules. The left adrenal nodule measures 2.0 cm."
              " "
              "On the right, a 9 mm nodule measures 2 HU.")
    rows, _ = summary(EMPTY, report)
    adrenal = rows["adrenal_gland"]
    assert (adrenal["lesion_count"], adrenal["count_is_lower_bound"], adrenal["sides"]) == (2, False, ["left", "right"])
    report = ("FINDINGS:\nLiver: Several small enhancing foci are seen in the right lobe. The largest, in segment 6, "
              "measures 7 mm.")
    rows, _ = summary(EMPTY, report)
    liver = rows["liver"]
    assert (liver["lesion_count"], liver["count_is_lower_bound"], liver["largest_location"]) == (2, True, "segment_6")


def test_a_sentence_about_the_lesion_just_described_adds_none():
    report = ("FINDINGS:\nKidneys: A 3.2 cm solid mass arises from the lower pole of the left kidney. The mass is "
              "exophytic and does not reach the renal sinus. This is consistent with a renal cell carcinoma.")
    answer = {"organs": [], "lesions": [
        lesion(organ="kidney", side="left", quote="This is consistent with a renal cell carcinoma")]}
    rows, _ = summary(answer, report)
    assert rows["kidney"]["lesion_count"] == 1


def test_new_lesions_beside_a_known_group_and_a_node_mass_by_a_vessel_are_counted():
    report = ("FINDINGS:\nAbdomen: Numerous simple hepatic cysts are again seen, the largest in segment 7 measuring "
              "3.1 cm. Among them are two new solid lesions with rim enhancement. One measures 1.9 cm and lies in "
              "segment 5; the other, in segment 2, measures 1.2 cm.\n"
              "Retroperitoneum: A conglomerate nodal mass at the level of the left renal vein measures 6.5 x 5.0 cm.")
    rows, _ = summary(EMPTY, report)
    assert (rows["liver"]["lesion_count"], rows["liver"]["count_is_lower_bound"]) == (4, True)
    assert (rows["lymph_node"]["lesion_count"], rows["lymph_node"]["largest_diameter_mm"]) == (1, 65.0)
    assert rows.get("kidney", {}).get("state", "not_mentioned") != "lesion"


def test_the_impression_counts_a_vague_findings_group_and_a_new_section_is_no_follow_up():
    report = ("FINDINGS:\nLungs: Scattered solid nodules have appeared in both lungs, mostly in the lower lobes. They "
              "are smooth and none is calcified.\nIMPRESSION:\n1. Five new solid pulmonary nodules, the dominant one "
              "measuring 11 mm in the left lower lobe.")
    rows, warnings = summary(EMPTY, report)
    lung = rows["lung"]
    assert (lung["lesion_count"], lung["count_is_lower_bound"]) == (5, False)
    assert (lung["largest_diameter_mm"], lung["largest_location"]) == (11.0, "left_lower_lobe")
    report = ("COMPARISON: None.\nFINDINGS:\nThe dominant finding is a solid nodule of 14 mm in the right upper lobe "
              "(series 3, image 30).")
    rows, _ = summary(EMPTY, report)
    assert (rows["lung"]["lesion_count"], rows["lung"]["largest_diameter_mm"]) == (1, 14.0)


def test_the_items_of_a_titled_nodule_list_are_lesions_and_the_dated_size_is_an_earlier_one():
    report = ("FINDINGS:\nLungs: Mild emphysema.\nTracked nodules:\n"
              "1. Right upper lobe, anterior segment: solid, 11 x 8 mm (series 3, image 41); it measured 9 x 7 mm on "
              "the study of 8 months ago.\n2. Left lower lobe, lateral basal segment: 5 mm (image 150), stable.\n"
              "3. Lingula: part-solid, 7 mm (image 96).\n"
              "IMPRESSION:\n1. Three pulmonary nodules, the right upper lobe one enlarging.\n")
    lung = summary(EMPTY, report)[0]["lung"]
    assert (lung["lesion_count"], lung["count_is_lower_bound"]) == (3, False)
    assert (lung["largest_diameter_mm"], lung["largest_location"]) == (11.0, "right_upper_lobe")
    assert lung["sides"] == ["left", "right"]


def test_a_new_sized_nodule_beside_one_of_its_size_is_one_more_and_the_comparison_paragraph_is_history():
    report = ("COMPARISON: CT chest of 3 months ago.\nAt that time, six nodules were present in the right lung.\n"
              "FINDINGS:\nLungs: A right middle lobe nodule measures 4 mm (previously 6 mm).\n"
              "There is one new 4 mm solid nodule in the lateral segment of the right middle lobe (image 80), which "
              "was not present 3 months ago.\nThe other nodules have resolved.\n")
    lung = summary(EMPTY, report)[0]["lung"]
    assert (lung["lesion_count"], lung["count_is_lower_bound"]) == (2, False)
    assert lung["largest_diameter_mm"] == 4.0


def test_the_nodules_others_include_are_examples_of_the_group():
    report = ("FINDINGS:\nLungs: More than ten small solid nodules are scattered through both lungs. Others include a "
              "5 mm nodule in the right upper lobe (image 30) and a 4 mm nodule in the left lower lobe (image 160).\n")
    lung = summary(EMPTY, report)[0]["lung"]
    assert lung["count_is_lower_bound"] is True and lung["lesion_count"] == 10


def test_a_stated_total_gives_the_count_and_a_size_in_total_diameter_is_no_total():
    report = ("FINDINGS:\nKidneys: Several cysts in both kidneys. On the left a 2.6 cm simple cyst in the upper pole "
              "and a 7 mm cyst in the lower pole.\nLungs: A part-solid nodule of 15 mm in total diameter in the right "
              "upper lobe.\nIMPRESSION:\n1. Simple renal cysts, four in total, the largest 2.6 cm on the left.\n")
    rows = summary(EMPTY, report)[0]
    assert (rows["kidney"]["lesion_count"], rows["kidney"]["count_is_lower_bound"]) == (4, False)
    assert rows["kidney"]["largest_diameter_mm"] == 26.0
    assert (rows["lung"]["lesion_count"], rows["lung"]["largest_diameter_mm"]) == (1, 15.0)


def test_recist_target_lines_after_the_comparison_are_current_lesions_sized_after_the_arrow():
    report = ("COMPARISON: Baseline CT of 10 weeks ago.\nRECIST 1.1 target lesions, baseline -> now:\n"
              "Target 1: liver segment 6, 35 mm -> 27 mm (image 40).\n"
              "Target 2: left lower lobe nodule, 12 mm -> 9 mm (image 170).\n"
              "FINDINGS:\nLungs: Two pulmonary nodules remain: the left lower lobe target nodule (9 mm) and a 4 mm "
              "nodule in the right upper lobe (image 50).\nLiver: The segment 6 target is the only liver lesion.\n")
    rows = summary(EMPTY, report)[0]
    assert (rows["liver"]["lesion_count"], rows["liver"]["largest_diameter_mm"]) == (1, 27.0)
    assert rows["liver"]["largest_location"] == "segment_6"
    lung = rows["lung"]
    assert (lung["lesion_count"], lung["largest_diameter_mm"], lung["largest_location"]) == (2, 9.0, "left_lower_lobe")
    assert lung["sides"] == ["left", "right"]


@pytest.mark.parametrize(("report", "expected"), [
    # the largest of a stated list written again after it is one of them
    ("Lungs: Three nodules: a 5 mm right upper lobe nodule, a 4 mm lingular nodule and a 3 mm left lower lobe "
     "nodule. The largest measures 5 mm.", (3, False, 5.0, "right_upper_lobe")),
    # the same size written again is one size; "it measured 6 mm previously" is an earlier one
    ("Lungs: An 8 mm nodule in the right middle lobe (image 80). It now measures 8 mm, previously 6 mm. A separate "
     "3 mm nodule in the left upper lobe.", (2, False, 8.0, "right_middle_lobe")),
    ("Lungs: Scattered nodules, at least six. The largest, in the left lower lobe, measures 10 mm; it measured 7 mm "
     "previously.", (6, True, 10.0, "left_lower_lobe")),
])
def test_a_group_and_its_largest_written_again(report, expected):
    lung = summary(EMPTY, "FINDINGS:\n" + report + "\n")[0]["lung"]
    assert (lung["lesion_count"], lung["count_is_lower_bound"], lung["largest_diameter_mm"],
            lung["largest_location"]) == expected


def test_nodes_named_after_the_organ_beside_them_a_category_label_and_a_previously_noted_size():
    report = ("FINDINGS:\nLymph nodes: Enlarged nodes lie at the splenic hilum (1.4 cm), in the porta hepatis (1.1 cm) "
              "and in the left para-aortic region (2.2 cm).\n"
              "New lesions: There is a new 8 mm hypodense lesion in liver segment 2.\n"
              "The previously noted 6 mm segment 7 cyst is unchanged.\n")
    rows = summary(EMPTY, report)[0]
    nodes = rows["lymph_node"]
    assert (nodes["lesion_count"], nodes["count_is_lower_bound"], nodes["largest_diameter_mm"]) == (3, False, 22.0)
    liver = rows["liver"]
    assert (liver["lesion_count"], liver["count_is_lower_bound"], liver["largest_diameter_mm"]) == (2, False, 8.0)
    assert "spleen" not in rows or rows["spleen"]["state"] != "lesion"


def test_the_report_words_count_an_organ_the_answer_miscounts_and_the_answer_keeps_an_organ_only_it_finds():
    from schemas.llm import CitedAnswer

    report = ("FINDINGS:\nLungs: Two solid nodules: 6 mm in the right upper lobe and 4 mm in the left lower lobe.\n"
              "Breast: Post-surgical change on the left without a mass.\n"
              "A focal lesion of the left breast, 14 mm, is suspicious.\n")
    answer = CitedAnswer.model_validate({"lesions": [
        {"organ": "lung", "sentences": [1], "count": 1, "count_exact": True},  # miscounted and unsized
        {"organ": "breast", "sentences": [3], "count": 1, "count_exact": True}], "normal": [], "resected": []})
    rows, warnings = summary(answer, report)
    assert (rows["lung"]["lesion_count"], rows["lung"]["largest_diameter_mm"]) == (2, 6.0)
    assert rows["breast"]["state"] == "lesion"


@pytest.mark.parametrize(("report", "organ", "expected"), [
    # bare members after an unnumbered group, and the largest written again
    ("LUNGS: Multiple small nodules are present. Right upper lobe, 6 mm (image 41). Left lower lobe, 9 mm (3/120). "
     "Lingula, 4 mm. The largest, in the left lower lobe, measures 9 mm. The pulmonary artery measures 2.8 cm.",
     "lung", (3, False, 9.0, "left_lower_lobe")),
    # a stated number and members sized under a label without a word of their own
    ("Lungs: Three small nodules are followed. Current (prior): RUL 5 mm (prior 5 mm); LLL 7 mm (prior 6 mm); "
     "lingula 3 mm (prior 3 mm).", "lung", (3, False, 7.0, "left_lower_lobe")),
    # an impression lesion sized in a place no findings record holds
    ("FINDINGS: Liver: 9 mm cyst in segment 2.\nIMPRESSION: Hepatic cyst. New 1.8 cm liver metastasis in segment 7.",
     "liver", (2, False, 18.0, "segment_7")),
    pytest.param(
        "FINDINGS:\nLiver: Cirrhotic morphology. Three observations are seen:\n"
        "Observation 1, segment 7 (image 30): 2.1 cm, arterial hyperenhancement with washout. LI-RADS 5.\n"
        "Observation 2, segment 4 (image 44): 1.2 cm, no washout. LI-RADS 4.\n"
        "Observation 3, segment 6 (image 51): 7 mm arterially enhancing focus. LI-RADS 3.\n",
        "liver", (3, False, 21.0, "segment_7"), id="a list item goes on past its further sentences"),
    pytest.param(
        "FINDINGS:\nChest: Innumerable nodules are present in both lungs, at least twelve, more than on the "
        "prior study. The largest measure:\nleft upper lobe 14 mm (image 40), previously 9 mm;\n"
        "right lower lobe 10 mm (image 180);\nright upper lobe 8 mm (image 33), new.\n",
        "lung", (12, True, 14.0, "left_upper_lobe"), id="a number set off after its group, the largest after a colon"),
    pytest.param(
        "FINDINGS:\nLiver: Four hepatic metastases are present, compared with six at baseline.\n"
        "Target lesion 1, segment 7: 28 mm (baseline 35 mm).\nTarget lesion 2, segment 2: 14 mm.\n"
        "The two non-target lesions, in segments 5 and 6, each measure 10 mm or less.\n"
        "New lesions: There is a new 7 mm hypoattenuating lesion in segment 3.\n",
        "liver", (5, False, 28.0, "segment_7"), id="a number of metastases takes in its targets, not a new one"),
    pytest.param(
        "FINDINGS:\nLungs: Four solid nodules are again seen; each is listed with its prior size in brackets:\n"
        "1. Right upper lobe, posterior segment: 10 x 8 mm (series 4, image 52) [previously 8 x 7 mm].\n"
        "2. Right lower lobe, superior segment: 6 mm (series 4, image 97) [6 mm].\n"
        "3. Left lower lobe, lateral basal segment: 4 mm (series 4, image 188) [4 mm].\n"
        "4. Lingula: 3 mm (series 4, image 140) [3 mm].\n",
        "lung", (4, False, 10.0, "right_upper_lobe"), id="a list after a lead-in, prior sizes in square brackets"),
    pytest.param(
        "FINDINGS:\nFibrosis: Subpleural reticulation with honeycomb cysts in both lower lobes. Ground-glass "
        "opacity is minimal.\nNodules: At least four solid nodules are present in the lungs.\n"
        "A 7 mm nodule in the left lower lobe (image 188) is unchanged.\n"
        "A 5 mm nodule in the left upper lobe is stable.\n"
        "A fourth, 3 mm in size, lies in the right middle lobe.\n"
        "A 4 mm nodule in the right upper lobe is new.\n",
        "lung", (4, True, 7.0, "left_lower_lobe"), id="no fibrosis lesions, at least four holds four described"),
    pytest.param(
        "PANCREAS: A 14 mm cyst in the pancreatic head.\nA 7 mm cyst in the pancreatic body is unchanged.\n"
        "At least two further tiny cysts are present in the tail, the larger 3 mm.\n",
        "pancreas", (4, True, 14.0, "head"), id="further lesions on the next line are of the organ just named"),
    pytest.param(
        "FINDINGS:\nLIVER: At least four hypoattenuating lesions are present, consistent with metastases. The "
        "largest is in segment 8 and measures 2.3 cm (series 5, image 22). A 1.5 cm lesion lies in segment 6, "
        "and an 8 mm lesion in segment 4a. At least one further subcentimeter lesion in segment 2 is too small "
        "to characterize.\n",
        "liver", (4, True, 23.0, "segment_8"), id="at least four sized after it holds those described next"),
    pytest.param(
        "FINDINGS:\nLungs: There are five new pulmonary nodules, all in the right lung. Two of them are in the "
        "right upper lobe, measuring 8 mm (series 3, image 40) and 5 mm (series 3, image 57). A single 4 mm "
        "nodule sits in the right middle lobe. One of them, a 3 mm nodule in the right lower lobe, is no longer "
        "seen. The right lower lobe holds two more nodules of 3 mm.\n",
        "lung", (5, False, 8.0, "right_upper_lobe"), id="two of them are two members of a stated number"),
])
def test_the_report_words_alone_count_and_size_an_organs_lesions(report, organ, expected):
    row = summary(EMPTY, report)[0][organ]
    assert (row["lesion_count"], row["count_is_lower_bound"], row["largest_diameter_mm"],
            row["largest_location"]) == expected


def test_a_finding_placed_before_a_semicolon_and_doubted_after_it_is_one_possible_lesion():
    payload, _ = to_payload(EMPTY, "Pancreas: Subtle hypoenhancing area in the pancreatic body; a small mass "
                                       "cannot be excluded.")
    (tumor,) = payload.tumors
    assert tumor.presence == "possible" and tumor.attenuation == "hypo" and tumor.segments == ["pancreas_body"]


def test_one_and_the_other_are_the_two_and_a_total_after_the_lung_sentences_counts_the_lung():
    report = ("FINDINGS:\nLungs: Apart from the infarct there are two small solid nodules. One lies in the right "
              "middle "
              "lobe and measures 6 mm (series 5, image 120); the other is in the anterior segment of the left upper "
              "lobe and measures 4 mm (series 5, image 66).\n")
    lung = summary(EMPTY, report)[0]["lung"]
    assert (lung["lesion_count"], lung["largest_diameter_mm"], lung["largest_location"]) == (
        2, 6.0, "right_middle_lobe")
    totals = ("FINDINGS:\nLungs: Four nodules are followed.\nRight upper lobe: 6 mm.\nLeft lower lobe: 5 mm.\n"
              "There is also one new 3 mm nodule in the right lower lobe. The total is therefore five nodules.\n")
    lung = summary(EMPTY, totals)[0]["lung"]
    assert (lung["lesion_count"], lung["count_is_lower_bound"], lung["largest_diameter_mm"]) == (5, False, 6.0)


def test_nodules_sized_after_an_innumerable_group_are_its_examples():
    report = ("FINDINGS:\nLungs: There are innumerable nodules throughout both lungs, increased since the prior study. "
              "For reference, the largest lies in the left lower lobe and now measures 16 mm (image 212). A right "
              "upper lobe nodule measures 10 mm (image 48). A representative lingular nodule measures 6 mm.\n"
              "Liver: Two further, smaller hypodense lesions are seen in the right hepatic lobe.\n")
    rows = summary(EMPTY, report)[0]
    lung = rows["lung"]
    assert (lung["lesion_count"], lung["count_is_lower_bound"], lung["largest_diameter_mm"]) == (2, True, 16.0)
    assert lung["largest_location"] == "left_lower_lobe"
    assert (rows["liver"]["lesion_count"], rows["liver"]["count_is_lower_bound"]) == (2, False)


def test_an_enlarged_spleen_size_after_its_label_and_a_lesion_at_the_pole_of_the_spleen():
    report = ("FINDINGS:\nSpleen: Enlarged at 16.5 cm. It contains three hypodense lesions, measuring 2.0, 1.4 and 0.9 "
              "cm. An additional 2.8 cm hypodense lesion is present at the lower pole of the spleen (series 2, image "
              "50).\nKidneys: Normal.\n")
    rows = summary(EMPTY, report)[0]
    assert (rows["spleen"]["lesion_count"], rows["spleen"]["largest_diameter_mm"]) == (4, 28.0)
    assert rows["kidney"]["state"] == "no_lesion"


def test_a_table_of_nodules_gives_one_lesion_per_current_row_and_its_sentences_repeat_it():
    report = ("FINDINGS:\nPulmonary nodules, current versus baseline:\n"
              "Nodule | Lobe | Image | Type | Current (mm) | Baseline (mm)\n"
              "A | RUL | 44 | solid | 6 x 5 | 6 x 5\n"
              "B | RML | 102 | part-solid | 11 x 9 | 11 x 8\n"
              "C | LLL | 171 | solid | not seen | 5\n"
              "D | LLL | 190 | solid | 3 | not present\n"
              "Three nodules are present on today's study. Nodule D is new, but at 3 mm needs no action.\n")
    lung = summary(EMPTY, report)[0]["lung"]
    assert (lung["lesion_count"], lung["count_is_lower_bound"], lung["largest_diameter_mm"],
            lung["largest_location"]) == (3, False, 11.0, "right_middle_lobe")
    assert lung["sides"] == ["left", "right"]
