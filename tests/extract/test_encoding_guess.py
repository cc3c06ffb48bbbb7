"""Scoring code-page readings: letters inside words read well, symbols and stray alphabets inside words do not."""

from __future__ import annotations

import pytest

from extract.encoding_guess import plausibility, read_candidates


@pytest.mark.parametrize("good,bad", [
    ("Läsion, Größe", "Lðsion, Gr—Ôe"),  # cp1252 read as hp_roman8
    ("wątroby, łagodna", "w¹troby, ³agodna"),  # cp1250 read as cp1252
    ("Образование печени", "Îáðàçîâàíèå ïå÷åíè"),  # cp1251 read as cp1252
    ("Läsion", "Lдsion"),  # a Cyrillic letter glued to Latin ones
])
def test_the_right_reading_scores_above_the_wrong_one(good, bad):
    assert plausibility(good)[0] > 0 >= plausibility(bad)[0]


def test_marks_are_located_and_neutral_symbols_are_not_marks():
    score, first_bad = plausibility("Liver 12×8 mm, 5 °C; Gr—Ôe")
    assert first_bad == len("Liver 12×8 mm, 5 °C; Gr")
    assert plausibility("Liver 12×8 mm, 5 °C, ±2 mm")[1] == -1


def test_candidates_are_ranked_by_score_with_ties_to_western_code_pages():
    data = "id,text\n1,Problème hépatique.\n".encode("cp1252")  # cp1250 reads it as "Problčme": same score
    readings = read_candidates(data, "cp1250")
    assert readings[0].encoding == "cp1252" and readings[0].score == readings[1].score
    polish = "id,text\n1,Wątroba: zmiana łagodna, śledziona bez zmian.\n".encode("cp1250")
    assert read_candidates(polish, "cp1252")[0].encoding == "cp1250"
    assert read_candidates(b"id,text\n1,L\x81ver\n", None)[0].bad_offset == len(b"id,text\n1,L")
