import math

import pytest

from schemas.measure import ellipsoid_volume_mm3, find_measurements, parse_size_text, three_axes_mm


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2 x 0.8 cm", [12.0, 8.0]),
        ("3.4 cm x 28 mm", [34.0, 28.0]),
        ("4.1 x 3.8 x 3.5 cm", [41.0, 38.0, 35.0]),
        ("9 mm", [9.0]),
        ("2.2 × 1.7 cm", [22.0, 17.0]),
        ("1.5 by 1.1 cm", [15.0, 11.0]),
        ("up to 1.5 cm", [15.0]),
        ("now 2.2 x 1.7 cm, previously 3.0 x 2.4 cm", [22.0, 17.0]),
        ("12", None),
        ("measures 25 HU", None),
        ("series 3 image 45", None),
        ("", None),
    ],
)
def test_parse_size_text(text, expected):
    assert parse_size_text(text) == expected


def test_find_measurements_skips_hu_and_series_numbers():
    text = "A 2.1 cm lesion (series 4, image 37) measures 12 HU; previously 1.8 cm."
    assert [m.diameters_mm for m in find_measurements(text)] == [(21.0,), (18.0,)]


def test_axes_and_volume():
    assert three_axes_mm([10.0]) == (10.0, 10.0, 10.0)
    assert three_axes_mm([20.0, 10.0]) == (20.0, 10.0, 15.0)
    assert three_axes_mm([]) is None
    assert ellipsoid_volume_mm3([10.0]) == pytest.approx(math.pi * 1000 / 6)
    assert ellipsoid_volume_mm3([30.0, 20.0, 10.0]) == pytest.approx(math.pi * 6000 / 6)


@pytest.mark.parametrize(("text", "expected"), [
    ("three lesions measuring 2.4, 1.6 and 1.2 cm", [(24.0,), (16.0,), (12.0,)]),
    ("nodules of 4 and 6 mm", [(4.0,), (6.0,)]),
    ("(series 3, image 40) and 5 mm", [(5.0,)]),
    ("between 5 and 7 mm", [(7.0,)]),
    ("in March 2021, 5 mm", [(5.0,)]),
    ("segments 2 and 3 (8 mm)", [(8.0,)]),
])
def test_numbers_listed_under_one_unit_are_each_a_size(text, expected):
    assert [m.diameters_mm for m in find_measurements(text)] == expected
