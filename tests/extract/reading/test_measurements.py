"""Current sizes and a group's members (`extract.reading.measurements`)."""

from extract.reading.measurements import current_measurements, split_by_measurement


def sizes(text):
    return [m.diameters_mm for m in current_measurements(text)]


def test_a_clause_dated_earlier_holds_earlier_sizes():
    assert sizes("It now measures 11 mm; it measured 8 mm with a 2 mm solid part a year ago") == [(11.0,)]
    assert sizes("solid, 8 x 6 mm (image 30); it measured 6 x 5 mm on the study of 9 months ago") == [(8.0, 6.0)]
    assert sizes("A 9 mm nodule, which was 7 mm in 2022 and 8 mm in 2023") == [(9.0,)]
    assert sizes("The nodule measured 9 mm") == [(9.0,)]  # dictated past tense, not dated: current


def _group(count, exact, laterality=None):
    return {"id": 1, "organ": "kidney", "count": count, "count_exact": exact, "laterality": laterality,
            "segments": [], "size": {"status": "not_reported"}, "attenuation": "unknown", "composition": "unknown",
            "innumerable": False}


def test_the_largest_of_a_stated_number_leaves_the_rest_exact_and_on_its_own_clause_side():
    text = ("Cysts in both kidneys; the largest measures 2.4 cm, in the upper pole of the right kidney, and two small "
            "cysts lie in the left kidney")
    largest, rest = split_by_measurement(_group(3, True, "bilateral"), text)
    assert largest["laterality"] == "right" and largest["size"]["diameters_mm"] == [24.0]
    assert (rest["count"], rest["count_exact"], rest["laterality"]) == (2, True, "bilateral")
    largest, rest = split_by_measurement(_group(2, True, "bilateral"), text)
    assert (rest["count"], rest["count_exact"], rest["laterality"]) == (1, True, "left")
    _, rest = split_by_measurement(_group(2, False), "Several renal cysts, the largest 2.4 cm in the right kidney")
    assert (rest["count"], rest["count_exact"]) == (1, False)


def test_an_average_of_the_size_just_written_is_no_second_size():
    assert sizes("Left lower lobe: 9 x 5 mm (mean diameter 7 mm), image 140") == [(9.0, 5.0)]
    assert sizes("A right upper lobe nodule has a mean diameter of 6 mm") == [(6.0,)]


def test_an_organ_size_after_the_organ_is_no_lesion_size():
    assert sizes("The spleen is enlarged at 15 cm and holds several hypodense lesions up to 2.2 cm") == [(22.0,)]
    assert sizes("the liver measures 19 cm craniocaudally") == []
    assert sizes("a cyst in the upper pole of the left kidney measuring 3.3 cm") == [(33.0,)]


def test_a_prior_word_before_a_colon_dates_no_size_after_it():
    assert sizes("Two lesions are new since the prior study: 2.1 cm in the tail and 8 mm in the head") == [
        (21.0,), (8.0,)]


def test_the_size_a_part_has_grown_to_is_the_part_size():
    assert sizes("measures 16 x 12 mm overall (image 60), with a solid component that has increased from 3 mm to "
                 "5 mm") == [(16.0, 12.0)]


def test_now_after_a_prior_word_dates_the_size_to_this_study():
    assert sizes("measuring 8 mm before, now 10 mm") == [(10.0,)]
    assert sizes("A 9 mm nodule previously measuring 6 mm") == [(9.0,)]
    assert sizes("The 5 mm nodule previously described is stable") == [(5.0,)]
