import pytest

from extract.reading.lesion_words import attenuation_in_text, composition_in_text, group_word_in_text, lesion_word_in_text
from schemas.vocab import Organ


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


def test_lesion_words_depend_on_the_organ():
    assert lesion_word_in_text(Organ.LIVER, "two hypodensities")
    assert not lesion_word_in_text(Organ.SPLEEN, "the spleen is enlarged")
    assert lesion_word_in_text(Organ.LYMPH_NODE, "enlarged hilar node")
    assert lesion_word_in_text(Organ.COLON, "circumferential wall thickening")
    assert not lesion_word_in_text(Organ.ADRENAL_GLAND, "mild thickening of the adrenal limb")


def test_group_and_composition_words():
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


def test_stated_counts_say_whether_they_are_exact():
    from extract.reading.lesion_words import stated_count

    assert stated_count("three hypodense hepatic lesions") == (3, True)
    assert stated_count("At least five additional solid nodules") == (5, False)
    assert stated_count("more than 10 pulmonary nodules") == (10, False)
    assert stated_count("a 5 mm nodule and 2 mm calcifications") is None


@pytest.mark.parametrize(("text", "group"), [
    ("A 12 mm part-solid nodule with a solid component and a few small bubbly lucencies", False),
    ("Both lower lobes contain a small nodule", False),
    ("Bilateral pleural effusions and a 2 cm right lower lobe mass", False),
    ("Two weeks after surgery, a 9 mm nodule", False),
    ("Multiple bilateral pulmonary micronodules", True),
    ("Several are calcified", True),
    ("Multiple sites of metastatic disease", True),
    ("Both kidneys contain cysts", True),
    ("A 2.2 cm interpolar cyst with multiple thin septa", False),
])
def test_a_quantifier_makes_a_group_only_of_the_lesions_it_counts(text, group):
    assert group_word_in_text(text) is group


def test_a_count_set_off_after_its_noun_and_a_stated_total():
    from extract.reading.lesion_words import stated_count, stated_total

    assert stated_count("Multiple nodules in both lungs, at least nine, larger than before") == (9, False)
    assert stated_count("Several hepatic lesions, four in number, in segments 2 to 6") == (4, True)
    assert stated_count("Hypodense lesions in segments 2, 3, and 8") is None
    assert stated_count("Several nodules, 4 mm and 5 mm") is None
    assert stated_total("Bilateral renal cysts, three in total") == 3
    assert stated_total("The total is therefore six nodules") == 6
    assert stated_total("a part-solid nodule of 12 mm in total diameter") is None
