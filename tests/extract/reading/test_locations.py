import pytest

from extract.reading.locations import liver_segments_in_text, side_in_text, subsegments_in_text
from schemas.vocab import Organ, SubSegment


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


def test_sides():
    assert side_in_text("left kidney") == "left"
    assert side_in_text("bilateral renal cysts") == "bilateral"
    assert side_in_text("pancreatic tail") is None


def test_lingula_counts_as_left():
    assert side_in_text("nodule in the lingula") == "left"
    assert side_in_text("lingular nodule and right lower lobe nodule") == "bilateral"


def test_a_size_after_a_segment_list_is_not_a_segment():
    from extract.reading.locations import liver_segments_in_text

    assert liver_segments_in_text("segment 6, 4.1 cm (previously 3.8 cm)") == [6]
    assert liver_segments_in_text("segment 4a, 12 mm") == [4]
    assert liver_segments_in_text("segments 6, 7 and 8, the largest 2 cm") == [6, 7, 8]
