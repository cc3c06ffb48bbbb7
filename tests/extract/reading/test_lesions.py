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


def test_nodal_stations_are_read_from_lists_and_sizes_are_not_stations():
    from extract.reading.lesions import nodal_stations

    assert nodal_stations("enlarged right hilar (10R) and subcarinal (7) nodes, and a 4R node") == {"10R", "7"}
    assert nodal_stations("The nodes at 2R, 4R and 11L are enlarged") == {"2R", "4R", "11L"}
    assert nodal_stations("stations 4L/5 are enlarged") == {"4L", "5"}
    assert nodal_stations("nodes at 2 and 3 cm; a node at 1.4 cm; (series 3, image 88)") == set()
