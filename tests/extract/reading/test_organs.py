import pytest

from extract.reading.organs import named_organs, organ_named_in_text, organ_scan, organs_named_by_word, scan_organs
from extract.reading.patterns import words_pattern
from schemas.vocab import ORGAN_WORDS, Organ


def test_organs_named_by_implied_location_words():
    assert named_organs("Segment VI cyst measures 9 mm") == {Organ.LIVER}
    assert named_organs("spiculated mass in the apicoposterior segment of the left upper lobe") == {Organ.LUNG}
    assert organ_named_in_text(Organ.KIDNEY, "exophytic lesion in the lower pole")
    assert not organ_named_in_text(Organ.SPLEEN, "liver and pancreas")


def test_one_pass_organ_scan_agrees_with_a_search_per_organ(tricky_texts):
    import re

    def per_organ(words, text):
        return {o for o, ws in words.items() if re.search(r"\b(?:" + "|".join(
            re.escape(w) for w in sorted(ws, key=len, reverse=True)) + r")\b", text, re.IGNORECASE)}

    for text in tricky_texts:
        assert named_organs(text) == {o for o in Organ if o is not Organ.OTHER and organ_named_in_text(o, text)}
        assert organs_named_by_word(text) == per_organ(ORGAN_WORDS, text)
    assert named_organs("Gall bladder wall") == {Organ.GALLBLADDER, Organ.BLADDER}  # overlapping words


def test_organ_scan_searches_separately_for_words_another_organ_could_hide():
    words = {Organ.LYMPH_NODE: ("lymph",), Organ.BONE: ("lymph node", "bone"), Organ.LIVER: ("liver",),
             Organ.SPLEEN: ("liver",)}
    scan, groups, hidden = organ_scan(words)
    assert hidden == {Organ.LYMPH_NODE, Organ.LIVER, Organ.SPLEEN}
    separate = {organ: words_pattern(words[organ]) for organ in hidden}
    assert scan_organs("a lymph node", scan, groups, separate) == {Organ.LYMPH_NODE, Organ.BONE}
    assert scan_organs("Liver", scan, groups, separate) == {Organ.LIVER, Organ.SPLEEN}
    assert scan_organs("lymphoma", scan, groups, separate) == set()


def test_the_word_before_a_node_places_the_node_and_names_no_organ():
    assert named_organs("An enlarged left gastric node, 14 mm") == {Organ.LYMPH_NODE}
    assert named_organs("splenic hilar lymph nodes") == {Organ.LYMPH_NODE}
    assert named_organs("Peripancreatic nodes beside a pancreatic head mass") == {Organ.PANCREAS, Organ.LYMPH_NODE}
    assert organ_named_in_text(Organ.KIDNEY, "renal hilar node") is False
    assert named_organs("A 5 mm nodule in the right upper lobe") == {Organ.LUNG}  # a nodule is no node


def test_the_word_before_a_vessel_names_no_organ():
    assert named_organs("A nodal mass at the level of the left renal vein") == {Organ.LYMPH_NODE}
    assert named_organs("The splenic vein is patent") == set()


@pytest.mark.parametrize(("text", "organs"), [
    ("The pancreas contains a 1.3 cm lesion, most in keeping with a renal cell carcinoma metastasis", {"pancreas"}),
    ("Liver metastases from a colorectal primary", {"liver"}),
    ("History of breast cancer. A 4 mm lung nodule.", {"lung"}),
    ("A 3 cm right renal mass consistent with renal cell carcinoma", {"kidney"}),  # where it is, not where from
    ("Known pancreatic adenocarcinoma with liver metastases", {"liver", "pancreas"}),
])
def test_where_a_metastasis_comes_from_names_no_organ(text, organs):
    assert {o.value for o in named_organs(text)} == organs


def test_an_intrapulmonary_lymph_node_is_a_lung_nodule_and_no_enlarged_node_clears_the_nodes():
    from extract.reading.organ_states import normal_organs

    assert named_organs("A 3 mm perifissural nodule, typical of an intrapulmonary lymph node") == {Organ.LUNG}
    assert named_organs("renal hilar nodes") == {Organ.LYMPH_NODE}
    assert Organ.LYMPH_NODE in normal_organs("There is no enlarged lymph node in the mediastinum or at either hilum.")


@pytest.mark.parametrize(("sentence", "assertion"), [
    ("Right lower paratracheal (4R) lymph node: 14 mm short axis, previously 22 mm.", "definite"),
    ("Subcarinal node 12 mm in short axis.", "definite"),
    ("A right hilar lymph node measuring 9 mm in short axis is prominent.", "none"),
    ("Small nodes at stations 4R and 7, each under 1 cm in short axis, within normal limits.", "none"),
    ("The hilar nodes, which reached 14 mm in short axis at the time of the infection, now measure 7 mm.", "none"),
])
def test_a_node_of_10_mm_short_axis_or_more_is_enlarged_without_the_word(sentence, assertion):
    from extract.reading.negation import lesion_assertion

    assert lesion_assertion(Organ.LYMPH_NODE, sentence) == assertion
