"""Citing answers tied to the report's numbered sentences, and the word readers the citing format leans on."""

import pytest

from extract.reading.convert import to_payload
from extract.reading.lesion_words import count_in_text, kind_in_text
from extract.reading.measurements import current_measurements, organ_measurements
from extract.reading.sentences import numbered_report, report_sentences, sentence_spans
from schemas.llm import CitedAnswer
from schemas.summary import organ_summary
from schemas.vocab import LesionType, Organ

CHEST = (
    "EXAM: CT chest with contrast.\n"
    "HISTORY: Colon cancer, restaging.\n"
    "FINDINGS:\n"
    "LUNGS: Numerous solid nodules in both lungs. The largest, in the left lower lobe, measures 1.4 cm "
    "(series 3, image 212), previously 9 mm. Mild dependent atelectasis.\n"
    "UPPER ABDOMEN: Two low-attenuation lesions in the right kidney, 8 mm and 2.2 cm, the larger in the lower pole. "
    "A 1.8 cm left adrenal nodule with macroscopic fat, consistent with a myelolipoma. Normal spleen.\n"
    "IMPRESSION:\n"
    "1. Enlarging pulmonary metastases.\n"
    "2. Left adrenal myelolipoma."
)


def cite(*lesions, normal=(), resected=()):
    return CitedAnswer.model_validate({
        "lesions": [{"organ": o, "sentences": list(s), "count": c, "count_exact": e} for o, s, c, e in lesions],
        "normal": list(normal), "resected": list(resected)})


def organs_of(payload):
    return {row["organ"]: row for row in organ_summary(payload) if row["state"] != "not_mentioned"}


def test_sentences_are_numbered_in_place_with_headers_and_list_numbers_left_as_written():
    shown = numbered_report(CHEST)
    assert shown.startswith("[1] EXAM: CT chest with contrast.\n[2] HISTORY: Colon cancer, restaging.\nFINDINGS:\n"
                            "[3] LUNGS: Numerous solid nodules in both lungs. [4] The largest,")
    assert "IMPRESSION:\n1. [9] Enlarging pulmonary metastases.\n2. [10] Left adrenal myelolipoma." in shown
    spans = sentence_spans(CHEST)
    assert len(spans) == 10 and spans[5].header == "UPPER ABDOMEN"
    assert [CHEST[s.start:s.end] for s in spans] == [text for _, text in report_sentences(CHEST)]


def test_a_group_its_largest_member_and_the_impression_repeat_make_one_sized_placed_record():
    payload, warnings = to_payload(cite(("lung", [3, 4, 9], 2, False), ("kidney", [6], 2, True),
                                        ("adrenal_gland", [7, 10], 1, True), normal=["spleen"]), CHEST)
    rows = organs_of(payload)
    lung = rows["lung"]
    assert lung["state"] == "lesion" and lung["largest_diameter_mm"] == 14 and lung["count_is_lower_bound"]
    assert lung["largest_location"] == "left_lower_lobe"
    kidney = rows["kidney"]
    assert (kidney["lesion_count"], kidney["largest_diameter_mm"], kidney["largest_attenuation"]) == (2, 22, "hypo")
    assert kidney["sides"] == ["right"]
    adrenal = [t for t in payload.tumors if t.organ is Organ.ADRENAL_GLAND]
    assert len(adrenal) == 1 and adrenal[0].lesion_type == LesionType.MYELOLIPOMA
    assert adrenal[0].composition == "fat_containing" and adrenal[0].laterality == "left"
    assert rows["spleen"]["state"] == "no_lesion"
    assert any("impression repeats" in w for w in warnings)


def test_a_cited_sentence_that_asserts_no_lesion_is_dropped_and_numbers_outside_the_report_are_ignored():
    payload, warnings = to_payload(cite(("lung", [5, 40], 1, True)), CHEST)
    assert not [t for t in payload.tumors if t.evidence == ["Mild dependent atelectasis"]]
    assert any("[40] not in the report" in w for w in warnings)
    assert any("asserts no lesion" in w for w in warnings)


def test_a_clause_after_a_semicolon_joins_the_cited_clause_before_it():
    report = "Pancreas: Ill-defined hypoenhancing area in the pancreatic tail; a small mass cannot be excluded."
    payload, _ = to_payload(cite(("pancreas", [1], 1, True)), report)
    (tumor,) = payload.tumors
    assert tumor.presence == "possible" and tumor.attenuation == "hypo"
    assert tumor.segments == ["pancreas_tail"]


def test_normal_and_resected_organs_need_a_sentence_that_says_so():
    report = "Liver: Normal. Gallbladder: Status post cholecystectomy. Kidneys: 5 mm left renal stone."
    payload, warnings = to_payload(cite(normal=["liver", "spleen"], resected=["gallbladder"]), report)
    states = {f.organ: (f.state, f.surgical_state) for f in payload.organs}
    assert states["liver"] == ("no_lesion", "not_stated") and states["gallbladder"] == ("no_lesion", "absent")
    assert "spleen" not in states and any("organ spleen" in w for w in warnings)


def test_an_organ_is_resected_only_where_a_sentence_says_it_was_removed():
    """Small models copy an example's answer ("resected: [kidney]"); a kidney the report calls normal stays."""
    report = ("HISTORY: Renal cell carcinoma, status post left nephrectomy.\nFINDINGS:\nKidneys: The right kidney is "
              "normal. Spleen: Normal.")
    payload, _ = to_payload(cite(normal=["spleen", "kidney"], resected=["kidney", "spleen"]), report)
    states = {f.organ: (f.state, f.surgical_state) for f in payload.organs}
    assert states["kidney"] == ("no_lesion", "absent")  # the history says so
    assert states["spleen"] == ("no_lesion", "not_stated")


@pytest.mark.parametrize("text,count", [
    ("Three hypodense lesions in the liver", 3), ("2 solid nodules", 2), ("There are 3 subcentimeter hypodensities", 3),
    ("4 mm nodules", None), ("3 x 2 cm nodules", None), ("Multiple cysts", None), ("A 12 mm cyst", None),
])
def test_a_count_is_read_only_where_the_words_state_a_number_of_lesions(text, count):
    assert count_in_text(text) == count


@pytest.mark.parametrize("organ,text,kind", [
    (Organ.KIDNEY, "fat-containing lesion, an angiomyolipoma", LesionType.ANGIOMYOLIPOMA),
    (Organ.ADRENAL_GLAND, "nodule consistent with an adenoma", LesionType.ADRENAL_ADENOMA),
    (Organ.LIVER, "nodule consistent with an adenoma", LesionType.NODULE),  # adrenal adenoma is not the liver's
    (Organ.LIVER, "hypodensities, likely metastases", LesionType.METASTASIS),
    (Organ.PANCREAS, "lesion", LesionType.LESION_UNSPECIFIED),
])
def test_kind_comes_from_the_words_where_the_organ_allows_it(organ, text, kind):
    assert kind_in_text(organ, text) is kind


def test_the_size_of_a_part_of_a_lesion_is_not_a_lesion_size():
    assert [m.text for m in current_measurements("An 8 mm part-solid nodule with a 3 mm solid component.")] == ["8 mm"]
    assert [m.text for m in current_measurements("2.1 cm cyst, previously 1.5 cm")] == ["2.1 cm"]


@pytest.mark.parametrize(("text", "current"), [
    ("RUL 6 mm (prior 5 mm); LLL 4 mm (prior 4 mm)", ["6 mm", "4 mm"]),  # each prior word has its own size
    ("The two nodules measure 7 mm (previously 5 mm) and 4 mm (unchanged)", ["7 mm", "4 mm"]),
    ("previously 5 mm and 7 mm, now 9 mm", ["9 mm"]),  # two sizes of one earlier reading
    ("measuring 12 mm, previously 10 mm", ["12 mm"]),
    ("now measures 14 mm, having measured 11 mm on the last study and 9 mm seven months ago", ["14 mm"]),
])
def test_a_prior_word_marks_only_the_sizes_it_reads(text, current):
    assert [m.text for m in current_measurements(text)] == current


def test_a_stated_number_takes_in_the_members_sized_under_a_label_of_its_section():
    report = ("FINDINGS:\nLungs: Three small solid nodules are followed. Nodule measurements, current (prior): "
              "RUL 6 mm (prior 5 mm); LLL 4 mm (prior 4 mm); lingula 3 mm (prior 3 mm).\nNo effusion.")
    payload, _ = to_payload(cite(("lung", [1, 2], 3, True), ("lung", [3], 1, True)), report)
    lung = organs_of(payload)["lung"]
    assert (lung["lesion_count"], lung["count_is_lower_bound"], lung["largest_diameter_mm"],
            lung["largest_location"]) == (3, False, 6, "right_upper_lobe")
    assert sorted(t.size.diameters_mm[0] for t in payload.tumors) == [3.0, 4.0, 6.0]


def test_a_nodule_with_a_few_lucencies_is_one_nodule():
    report = ("FINDINGS:\nThe dominant finding is a part-solid nodule of 12 mm in the apical segment of the right upper "
              "lobe, with a solid component of 5 mm and a few small bubbly lucencies.\nNo pleural effusion.")
    lung = organs_of(to_payload(cite(("lung", [1], 1, True)), report)[0])["lung"]
    assert (lung["lesion_count"], lung["count_is_lower_bound"], lung["largest_diameter_mm"]) == (1, False, 12)


def test_a_sentence_that_only_says_what_the_lesion_before_is_adds_no_lesion():
    report = "Liver: A 2.0 x 1.8 cm lesion in segment 5/6 demonstrates peripheral nodular enhancement. Likely hemangioma."
    liver = organs_of(to_payload(cite(("liver", [2], 2, True), ("liver", [1], 1, True)), report)[0])["liver"]
    assert (liver["lesion_count"], liver["largest_diameter_mm"]) == (1, 20)
    # with a place of its own it is another lesion
    other = report.replace("Likely hemangioma.", "Probable hemangioma in segment 2.")
    assert organs_of(to_payload(cite(("liver", [1, 2], 1, True)), other)[0])["liver"]["lesion_count"] == 2


def test_a_size_followed_by_another_organ_is_not_this_organs():
    report = ("FINDINGS:\n1. Hepatic metastases in segments 6 and 7, the largest 2.3 cm in segment 7.\nIMPRESSION: "
              "Metastatic pancreatic cancer: 4.2 cm pancreatic head primary with liver metastases.")
    liver = organs_of(to_payload(cite(("liver", [1], 2, False), ("liver", [2], 1, True)), report)[0])["liver"]
    assert (liver["largest_diameter_mm"], liver["largest_location"]) == (23, "segment_7")
    assert [m.text for m in organ_measurements(Organ.LIVER, "a 4.2 cm pancreatic head mass and a 2 cm liver cyst")] \
        == ["2 cm"]


def test_an_organs_length_is_no_lesion_size_and_a_bare_group_after_a_group_is_part_of_it():
    report = ("FINDINGS:\nKidneys: Both kidneys are enlarged (right 19 cm, left 21 cm in length) and replaced by "
              "innumerable cysts. The largest cyst is in the upper pole of the left kidney and measures 6.2 cm. "
              "Several cysts show fine peripheral mural calcification.\nSpleen: Normal.")
    payload, _ = to_payload(cite(("kidney", [1], 2, False), ("kidney", [3], 2, False)), report)
    kidney = organs_of(payload)["kidney"]
    assert (kidney["lesion_count"], kidney["count_is_lower_bound"], kidney["largest_diameter_mm"]) == (2, True, 62)
    # with a place of its own, a second group is more lesions
    other = report.replace("Several cysts show", "Several cysts in the lower pole show")
    assert organs_of(to_payload(cite(("kidney", [1], 2, False), ("kidney", [3], 2, False)), other)[0])[
        "kidney"]["lesion_count"] == 4


def test_a_total_then_the_largest_described_one_by_one_is_the_total():
    report = ("FINDINGS:\nLung nodules: There are five noncalcified solid nodules in total. The three largest are as "
              "follows. A right upper lobe nodule measures 8 mm (series 2, image 71). A nodule in the right lower lobe "
              "measures 6 mm. A 5 mm nodule lies in the left upper lobe.\nNo pleural effusion.")
    lung = organs_of(to_payload(cite(("lung", [1, 2], 5, True)), report)[0])["lung"]
    assert (lung["lesion_count"], lung["count_is_lower_bound"], lung["largest_diameter_mm"]) == (5, False, 8)


def test_a_nodule_resolved_after_a_bracket_and_one_unchanged_from_both_priors():
    report = ("FINDINGS:\nLUNGS: The 5 mm right lower lobe nodule seen on the prior (series 3, image 140 on that study) "
              "has resolved. The 6 mm nodule in the left upper lobe is unchanged from both prior examinations.")
    lung = organs_of(to_payload(cite(("lung", [1], 1, True), ("lung", [2], 1, True)), report)[0])["lung"]
    assert (lung["lesion_count"], lung["sides"], lung["largest_diameter_mm"]) == (1, ["left"], 6)


def test_a_size_for_each_of_several_leaves_the_stated_number():
    report = ("FINDINGS:\nLungs: The left lung contains three nodules: two in the left upper lobe, each 3 to 4 mm "
              "(images 52 and 77), and one in the left lower lobe, which at 7 mm (image 163) is the largest.")
    lung = organs_of(to_payload(cite(("lung", [1], 3, True)), report)[0])["lung"]
    assert (lung["lesion_count"], lung["count_is_lower_bound"], lung["largest_diameter_mm"]) == (3, False, 7)


def test_representative_nodules_are_examples_of_the_group_counted_before():
    report = ("FINDINGS:\nLungs: More than ten small solid nodules are scattered throughout both lungs. The largest "
              "measures 7 mm in the left upper lobe (series 4, image 54). Other representative nodules measure 5 mm in "
              "the right upper lobe (image 49) and 4 mm in the right lower lobe (image 88).\nNo pleural effusion.")
    lung = organs_of(to_payload(cite(("lung", [1, 2], 10, False), ("lung", [3], 2, True)), report)[0])["lung"]
    assert (lung["lesion_count"], lung["count_is_lower_bound"], lung["largest_diameter_mm"]) == (10, True, 7)


def test_a_list_line_with_two_sizes_is_two_members():
    report = ("FINDINGS:\nUpper abdomen: There are bilateral adrenal nodules; the right measures 11 mm and the left "
              "17 mm. Both are of soft tissue attenuation (32 and 35 HU) and indeterminate.")
    adrenal = organs_of(to_payload(cite(("adrenal_gland", [1], 2, False)), report)[0])["adrenal_gland"]
    assert (adrenal["lesion_count"], adrenal["count_is_lower_bound"], adrenal["largest_diameter_mm"],
            adrenal["largest_location"]) == (2, False, 17, "left")


def test_a_second_lesion_after_a_number_and_its_largest_is_one_of_them():
    report = ("FINDINGS:\nLIVER: Three hypoattenuating hepatic lesions are seen, the largest measuring 2.1 x 1.8 cm in "
              "segment 7 (series 2, image 18). A second lesion in segment 4a measures 9 mm (series 2, image 22).")
    liver = organs_of(to_payload(cite(("liver", [1], 3, True), ("liver", [2], 1, True)), report)[0])["liver"]
    assert (liver["lesion_count"], liver["count_is_lower_bound"], liver["largest_diameter_mm"]) == (3, False, 21)
    # when the number's words size every member, a second one is more
    sized = report.replace("the largest measuring 2.1 x 1.8 cm in segment 7", "measuring 2.1 and 1.4 cm")
    sized = sized.replace("Three hypoattenuating", "Two hypoattenuating")
    assert organs_of(to_payload(cite(("liver", [1], 2, True), ("liver", [2], 1, True)), sized)[0])["liver"][
        "lesion_count"] == 3


def test_several_then_only_the_largest_sized_stays_at_least_two():
    report = ("FINDINGS:\nLiver: Several tiny hypodensities are scattered through the liver; they are too small to "
              "characterize but most likely cysts, and the largest, in segment 6, measures 7 mm. Mild steatosis.")
    liver = organs_of(to_payload(cite(("liver", [1, 2], 2, False)), report)[0])["liver"]
    assert (liver["lesion_count"], liver["count_is_lower_bound"], liver["largest_diameter_mm"],
            liver["largest_location"]) == (2, True, 7, "segment_6")


def test_a_count_at_baseline_is_history_and_an_opinion_is_the_impression():
    report = ("Findings:\nLiver: Five metastases were described at baseline. Target lesion 1, in segment 8, now "
              "measures 24 mm, down from 38 mm. The non-target lesion in segment 3 measures 6 mm.\nOpinion:\n1. A total "
              "of two hepatic lesions is now visible, the largest 24 mm in segment 8.")
    liver = organs_of(to_payload(cite(("liver", [1], 5, True)), report)[0])["liver"]
    assert (liver["lesion_count"], liver["count_is_lower_bound"], liver["largest_diameter_mm"]) == (2, False, 24)


def test_a_side_called_normal_is_not_the_lesions_side():
    report = ("FINDINGS:\nAdrenals: A new 1.8 cm nodule in the left adrenal gland (series 2, image 112) is suspicious "
              "for metastasis, while the right adrenal gland is normal.")
    adrenal = organs_of(to_payload(cite(("adrenal_gland", [1], 1, True)), report)[0])["adrenal_gland"]
    assert (adrenal["lesion_count"], adrenal["count_is_lower_bound"], adrenal["sides"]) == (1, False, ["left"])


def test_sizes_written_after_their_places_split_into_placed_members():
    report = "Liver: Three hypodense lesions, in segment 4 (8 mm), segment 6 (1.1 cm) and segment 8 (2.3 x 1.9 cm)."
    payload, _ = to_payload(cite(("liver", [1], 3, True)), report)
    assert [(t.segments, t.size.diameters_mm) for t in payload.tumors] == [
        (["liver_segment_4"], [8.0]), (["liver_segment_6"], [11.0]), (["liver_segment_8"], [23.0, 19.0])]


def test_a_cited_sentence_about_no_organ_or_another_one_is_left_out_unless_its_section_names_the_organ():
    report = ("Liver: A 2.4 cm hypodense lesion in segment 6. Another 9 mm lesion is seen more superiorly.\n"
              "Peritoneal carcinomatosis with omental caking.")
    payload, warnings = to_payload(cite(("liver", [1], 1, True), ("liver", [2], 1, True), ("pancreas", [3], 1, True)),
                                   report)
    assert [(t.organ, t.size.diameters_mm) for t in payload.tumors] == [("liver", [24.0]), ("liver", [9.0])]
    assert sum("do not speak of the organ" in w for w in warnings) == 1


def test_two_lesions_sized_in_one_sentence_are_two_and_earlier_studies_sizes_are_not_current():
    report = "The liver contains a 5 mm hypodense focus in the caudate lobe and a 2.1 cm cyst in the dome."
    payload, _ = to_payload(cite(("liver", [1], 1, True)), report)
    assert sorted(t.size.diameters_mm[0] for t in payload.tumors) == [5.0, 21.0]
    sized = "Pancreas: 2.7 x 2.3 cm mass in the body, previously 2.8 x 2.4 cm, and 3.5 x 3.1 cm on the earlier study."
    assert [m.text for m in current_measurements(sized)] == ["2.7 x 2.3 cm"]


LIST = ("LUNGS: Multiple bilateral pulmonary nodules are present. Right upper lobe, 5 mm (series 3, image 41). "
        "Left lower lobe, 8 mm (3/120). Lingula, 3 mm (3/77). The largest, in the left lower lobe, measures 8 mm, "
        "previously 6 mm. The main pulmonary artery measures 2.6 cm. No pleural effusion.")


@pytest.mark.parametrize("cited", [[[1, 2, 3, 4, 5]], [[2], [3], [4]], [[3, 4]], [[1, 5], [2], [4]]],
                         ids=["whole list", "members one by one", "two members", "group, largest, members"])
def test_a_list_of_nodules_sized_one_by_one_counts_its_members_however_it_is_cited(cited):
    answer = cite(*[("lung", numbers, 2, False) for numbers in cited])
    payload, _ = to_payload(answer, LIST)
    lung = organs_of(payload)["lung"]
    assert (lung["lesion_count"], lung["largest_diameter_mm"], lung["largest_location"]) == (3, 8, "left_lower_lobe")
    assert sorted(t.size.diameters_mm[0] for t in payload.tumors) == [3.0, 5.0, 8.0]


def test_a_size_of_something_else_in_the_section_is_no_list_member():
    report = ("Pancreas: Hypoenhancing mass in the pancreatic head measuring 3.1 cm. Upstream main duct dilatation "
              "to 7 mm.")
    payload, _ = to_payload(cite(("pancreas", [1, 2], 1, True)), report)
    assert [t.size.diameters_mm for t in payload.tumors] == [[31.0]]


@pytest.mark.parametrize("sentence", ["Lymph nodes: No enlarged abdominal or pelvic lymph nodes.",
                                      "No axillary, mediastinal or hilar lymphadenopathy.",
                                      "Mediastinal and hilar lymph nodes are not enlarged."])
def test_lymph_nodes_are_cleared_in_the_words_reports_use(sentence):
    from extract.reading.organ_states import normal_organs

    assert Organ.LYMPH_NODE in normal_organs(sentence)
    assert Organ.LYMPH_NODE not in normal_organs("An enlarged 1.6 cm right hilar lymph node.")
