"""Negated stretches and lesion assertions (`extract.reading.negation`)."""

from extract.reading.negation import item_assertion, lesion_assertion, negated_blanked
from schemas.vocab import Organ


def test_absent_on_an_earlier_study_means_new_not_negated():
    sentence = "A 6 mm nodule in the left lower lobe, which was not seen 3 months ago, is noted"
    assert lesion_assertion(Organ.LUNG, sentence) == "definite"
    assert lesion_assertion(Organ.LIVER, "A new 1.2 cm liver lesion, not present at baseline") == "definite"
    assert lesion_assertion(Organ.LUNG, "The lingular nodule is not seen") == "none"


def test_a_closing_cue_without_a_subject_of_its_own_closes_the_sentence_subject():
    sentence = "The 5 mm right middle lobe nodule described in 2023, and already smaller last year, is no longer seen"
    assert negated_blanked(sentence).strip() == ""
    assert lesion_assertion(Organ.LUNG, sentence) == "none"
    # a clause with its own subject stays closed alone
    assert lesion_assertion(Organ.LUNG, "Two lung nodules persist, and a third has resolved") == "definite"


def test_a_count_at_baseline_is_history():
    assert lesion_assertion(Organ.LUNG, "Of the four lung nodules at baseline") == "none"


def test_a_list_item_takes_the_lesion_word_of_its_title():
    item = "Right upper lobe, posterior segment: solid, 7 mm (image 40)"
    assert lesion_assertion(Organ.LUNG, item) == "none"
    assert item_assertion(Organ.LUNG, item, "Current nodules") == "definite"
    assert item_assertion(Organ.LUNG, item, "Resolved nodules") == "none"
    assert item_assertion(Organ.LUNG, "Right upper lobe: clear", "Current nodules") == "none"  # no size
