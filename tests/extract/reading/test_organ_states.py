"""Organs the report clears (`extract.reading.organ_states`)."""

from extract.reading.organ_states import normal_organs
from schemas.vocab import Organ


def test_normal_in_size_homogeneous_and_a_granuloma_clear_an_organ_and_a_lesion_sentence_does_not():
    report = ("Kidneys: Normal in size.\nLiver: Homogeneous enhancement.\nThe mediastinal nodes are of normal size.\n"
              "The spleen holds two punctate calcified granulomas.\n"
              "The pancreas is normal in size with a 9 mm cyst in the tail.\nThe aorta is of normal caliber.\n")
    cleared = normal_organs(report)
    assert {Organ.KIDNEY, Organ.LIVER, Organ.LYMPH_NODE, Organ.SPLEEN} <= set(cleared)
    assert Organ.PANCREAS not in cleared
