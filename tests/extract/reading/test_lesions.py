from extract.reading.lesions import drop_reason, sentence_organs
from schemas.vocab import Organ


def test_drop_reason_names_the_rule_that_drops_a_sentence_lesion():
    assert drop_reason(Organ.LIVER, "Liver", "Liver: 2 cm hypodense lesion in segment 7") is None
    assert drop_reason(Organ.KIDNEY, "Clinical history", "Renal mass") == "quote is in the history/technique section"
    assert drop_reason(Organ.LIVER, "Liver", "Liver: No focal lesion") == (
        "its sentence asserts no lesion (negated, normal or not a lesion)")
    assert drop_reason(Organ.KIDNEY, "", "3 mm left renal calculus and a 1 cm renal cyst", "3 mm left renal calculus") == (
        "not a lesion (stone/collection/...)")
    assert drop_reason(Organ.KIDNEY, "", "9 mm cyst in the pancreatic body") == "its sentence is about ['pancreas']"
    # without a quote only the sentence counts: the stone rule needs the quoted words
    assert drop_reason(Organ.KIDNEY, "", "3 mm left renal calculus and a 1 cm renal cyst") is None


def test_organs_named_only_in_history_wording_do_not_count():
    assert sentence_organs("", "Pancreatic lesion, suspicious for metastasis from renal cell carcinoma") == {
        Organ.PANCREAS}
    assert sentence_organs("Spleen", "1 cm cyst") == {Organ.SPLEEN}
