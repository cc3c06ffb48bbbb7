import pytest

from schemas.vocab import (
    ORGAN_SUBSEGMENTS,
    ORGANS,
    Organ,
    SubSegment,
    attenuation_in_text,
    liver_segments_in_text,
    side_in_text,
    subsegments_in_text,
    summary_location,
)


def test_eighteen_organ_keys_in_contract_order():
    assert ORGANS == (
        "liver", "pancreas", "kidney", "spleen", "adrenal_gland", "gallbladder", "lung", "bladder", "colon",
        "stomach", "esophagus", "uterus", "prostate", "bone", "duodenum", "breast", "ovary_adnexa", "lymph_node",
    )


def test_every_subsegment_belongs_to_exactly_one_organ():
    owners = [organ for seg in SubSegment for organ, segs in ORGAN_SUBSEGMENTS.items() if seg in segs]
    assert len(owners) == len(SubSegment)


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("segment 7", [7]),
        ("segment VII", [7]),
        ("segments VI and VII", [6, 7]),
        ("segment 4A", [4]),
        ("segment 4/5", [4, 5]),
        ("segments 2-3", [2, 3]),
        ("segment II", [2]),
        ("caudate lobe", [1]),
        ("right hepatic lobe", [5, 6, 7, 8]),
        ("left lobe", [2, 3, 4]),
        ("hepatic dome", [7, 8]),
        ("the liver", []),
    ],
)
def test_liver_segments(text, segments):
    assert liver_segments_in_text(text) == segments


def test_pancreas_and_kidney_parts():
    assert subsegments_in_text(Organ.PANCREAS, "pancreatic head/uncinate process") == [
        SubSegment.PANCREAS_HEAD, SubSegment.PANCREAS_UNCINATE]
    assert subsegments_in_text(Organ.PANCREAS, "neck of the pancreas") == [SubSegment.PANCREAS_NECK]
    assert subsegments_in_text(Organ.KIDNEY, "interpolar region") == [SubSegment.KIDNEY_INTERPOLAR]
    assert subsegments_in_text(Organ.KIDNEY, "right lower pole") == [SubSegment.KIDNEY_LOWER_POLE]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("heterogeneously enhancing mass", "heterogeneous"),
        ("hypoenhancing mass", "hypo"),
        ("arterially enhancing lesion", "hyper"),
        ("low-density focus", "hypo"),
        ("isoattenuating", "iso"),
        ("a lesion", None),
    ],
)
def test_attenuation_words(text, value):
    assert attenuation_in_text(text) == value


def test_sides_and_summary_location():
    assert side_in_text("left kidney") == "left"
    assert side_in_text("bilateral renal cysts") == "bilateral"
    assert side_in_text("pancreatic tail") is None
    assert summary_location(Organ.LIVER, [SubSegment.LIVER_SEGMENT_7], None) == "segment_7"
    assert summary_location(Organ.LIVER, [SubSegment.LIVER_SEGMENT_5, SubSegment.LIVER_SEGMENT_6], None) == "right_lobe"
    assert summary_location(Organ.LIVER, [SubSegment.LIVER_SEGMENT_4, SubSegment.LIVER_SEGMENT_5], None) is None
    assert summary_location(Organ.PANCREAS, [SubSegment.PANCREAS_NECK], None) == "neck"
    assert summary_location(Organ.KIDNEY, [SubSegment.KIDNEY_UPPER_POLE], "left") == "left"
    assert summary_location(Organ.LUNG, [SubSegment.LUNG_LOWER_LOBE], "right") == "right_lower_lobe"


def test_lingula_counts_as_left():
    assert side_in_text("nodule in the lingula") == "left"
    assert side_in_text("lingular nodule and right lower lobe nodule") == "bilateral"


def test_organs_named_by_implied_location_words():
    from schemas.vocab import named_organs, organ_named_in_text

    assert named_organs("Segment VI cyst measures 9 mm") == {Organ.LIVER}
    assert named_organs("spiculated mass in the apicoposterior segment of the left upper lobe") == {Organ.LUNG}
    assert organ_named_in_text(Organ.KIDNEY, "exophytic lesion in the lower pole")
    assert not organ_named_in_text(Organ.SPLEEN, "liver and pancreas")


_TRICKY_TEXTS = [
    "Gall bladder wall thickening; the urinary bladder is normal.",
    "LOWER POLE renal cyst and a lower lobe nodule", "lymph nodes: none", "lymphadenopathy", "node-negative",
    "hepatic dome (segment 4A/segment VIII)", "LI-RADS 5 observation", "ground-glass opacity", "gallbladders",
    "adrenals and adrenal glands", "segment 9", "segmental", "renal/adrenal", "Kidney\tand  spleen", "",
]


def test_one_pass_organ_scan_agrees_with_a_search_per_organ():
    import re

    from schemas.vocab import ORGAN_WORDS, named_organs, organ_named_in_text, organs_named_by_word

    def per_organ(words, text):
        return {o for o, ws in words.items() if re.search(r"\b(?:" + "|".join(
            re.escape(w) for w in sorted(ws, key=len, reverse=True)) + r")\b", text, re.IGNORECASE)}

    for text in _TRICKY_TEXTS:
        assert named_organs(text) == {o for o in Organ if o is not Organ.OTHER and organ_named_in_text(o, text)}
        assert organs_named_by_word(text) == per_organ(ORGAN_WORDS, text)
    assert named_organs("Gall bladder wall") == {Organ.GALLBLADDER, Organ.BLADDER}  # overlapping words


def test_organ_scan_searches_separately_for_words_another_organ_could_hide():
    from schemas.vocab import _organ_scan, _scan_organs, _words_pattern

    words = {Organ.LYMPH_NODE: ("lymph",), Organ.BONE: ("lymph node", "bone"), Organ.LIVER: ("liver",),
             Organ.SPLEEN: ("liver",)}
    scan, groups, hidden = _organ_scan(words)
    assert hidden == {Organ.LYMPH_NODE, Organ.LIVER, Organ.SPLEEN}
    separate = {organ: _words_pattern(words[organ]) for organ in hidden}
    assert _scan_organs("a lymph node", scan, groups, separate) == {Organ.LYMPH_NODE, Organ.BONE}
    assert _scan_organs("Liver", scan, groups, separate) == {Organ.LIVER, Organ.SPLEEN}
    assert _scan_organs("lymphoma", scan, groups, separate) == set()


def test_word_patterns_written_as_tries_match_what_the_word_lists_say():
    import re

    from schemas.vocab import GROUP_WORDS, LESION_WORDS, _words_pattern

    texts = [*_TRICKY_TEXTS, "Multiple MASSES, a mass and massive nodes", "cyst cystic cysts cystadenoma",
             "ground glass opacity; ground-glass opacities", "two-three foci", "fibroid(s)"]
    for words in (LESION_WORDS, GROUP_WORDS, ("no", "no evidence of", "nor", "not", "none")):
        flat = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b",
                          re.IGNORECASE)
        trie = _words_pattern(words)
        assert trie.pattern != flat.pattern
        for text in texts:
            assert [m.span() for m in trie.finditer(text)] == [m.span() for m in flat.finditer(text)], text
    mixed = _words_pattern(("Ab", "ab cd"))  # not all lower-case ASCII: plain alternation, longest first
    assert mixed.pattern == r"\b(?:ab\ cd|Ab)\b" and mixed.search("AB CD").span() == (0, 5)


def test_lesion_words_depend_on_the_organ():
    from schemas.vocab import lesion_word_in_text

    assert lesion_word_in_text(Organ.LIVER, "two hypodensities")
    assert not lesion_word_in_text(Organ.SPLEEN, "the spleen is enlarged")
    assert lesion_word_in_text(Organ.LYMPH_NODE, "enlarged hilar node")
    assert lesion_word_in_text(Organ.COLON, "circumferential wall thickening")
    assert not lesion_word_in_text(Organ.ADRENAL_GLAND, "mild thickening of the adrenal limb")


def test_group_and_composition_words():
    from schemas.vocab import composition_in_text, group_word_in_text

    assert group_word_in_text("Three cysts") and group_word_in_text("scattered nodules")
    assert not group_word_in_text("a 2 cm cyst in the left kidney")
    assert composition_in_text("cystic lesion containing macroscopic fat") == "fat_containing"
    assert composition_in_text("simple cyst") == "cystic"
    assert composition_in_text("solid mass") is None


def test_non_enhancing_is_not_hyper():
    assert attenuation_in_text("non-enhancing cyst") is None
    assert attenuation_in_text("without internal enhancement") is None
    assert attenuation_in_text("nonenhancing hypodense lesion") == "hypo"
    assert attenuation_in_text("enhancing solid mass") == "hyper"
