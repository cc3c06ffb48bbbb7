"""Choosing the code page of a dump that is not UTF-8, by how plausible each candidate's text reads.

A detector's ranking is not enough for short, mostly-ASCII reports: charset-normalizer ranks hp_roman8 first for
German cp1252 ("Lðsion", "Gr—Ôe") and cp1252 first for Polish cp1250 ("w¹troby"). Wrong code pages leave marks
inside words, where real text has letters: a symbol between two letters ("Gr—Ôe", "w¹troby"), or a rare letter,
or a letter of another alphabet, glued to ASCII letters ("Lðsion", "Lдsion", "L畜ion"). Each candidate's text is
scored on those marks and on the accented letters European reports use. The best score wins, ties going to the
Western code pages; where even the best reading garbles more than it reads well, the dump is refused.
"""

from __future__ import annotations

import codecs
import functools
import re
import unicodedata
from dataclasses import dataclass

#: Accented letters of the languages reports come in (Western, Central and Northern European, Turkish, Romanian).
COMMON_ACCENTED = frozenset(
    "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœšžčćďěľĺňřťůźżąęłńśőűğışţșțāēīū"
    "ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝŸŒŠŽČĆĎĚĽĹŇŘŤŮŹŻĄĘŁŃŚŐŰĞİŞŢȘȚĀĒĪŪ"
)

#: Code pages always tried besides the detector's first guess: the Windows and ISO ones exports come in. DOS and
#: Mac code pages read nearly any byte as an accented letter, so they are tried only when the detector names them.
CANDIDATES = ("cp1252", "iso8859_15", "latin_1", "cp1250", "iso8859_2", "cp1251", "cp1253", "cp1254", "cp1257")

#: How much non-ASCII text the choice reads: the lines holding non-ASCII bytes, up to this many bytes.
SAMPLE_BYTES = 1 << 18

_NON_ASCII_LINES = re.compile(rb"[^\n]*[\x80-\xff][^\n]*")
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")


@dataclass(frozen=True)
class Reading:
    """One candidate encoding's reading of the sample.

    Attributes:
        encoding: the codec name.
        score: accented letters in words minus marks of a wrong code page (higher reads better).
        bad_offset: byte offset in the file of the first such mark, or -1.
    """

    encoding: str
    score: int
    bad_offset: int


@functools.lru_cache(maxsize=4096)
def _script(ch: str) -> str:
    """The first word of the character's Unicode name: LATIN, CYRILLIC, GREEK, CJK, ..."""
    return unicodedata.name(ch, "?").split(" ", 1)[0]


def plausibility(text: str) -> tuple[int, int]:
    """(score, index of the first wrong-code-page mark or -1) of a decoded text; see the module docstring.

    Per non-ASCII character: +1 for a common accented letter inside a Latin word, or a letter among letters of
    its own alphabet; -1 for a rare letter or another alphabet glued to ASCII letters ("Lðsion", "Lдsion"), or
    an accented letter in a run of five or more (a Cyrillic or Greek word read in a Latin code page); -2 for a
    symbol, punctuation mark or superscript between two letters ("Gr—Ôe", "w¹troby"); -3 for a C1 control
    character. Anything else (a degree sign, a multiplication sign between digits) says nothing.
    """
    score, first_bad = 0, -1
    n = len(text)
    for run in _NON_ASCII_RUN.finditer(text):
        long_letter_run = run.end() - run.start() >= 5 and run.group().isalpha()
        for i in range(run.start(), run.end()):
            ch = text[i]
            prev = text[i - 1] if i > 0 else " "
            nxt = text[i + 1] if i + 1 < n else " "
            glued_to_ascii = (prev.isascii() and prev.isalpha()) or (nxt.isascii() and nxt.isalpha())
            penalty = gain = 0
            if "\x80" <= ch <= "\x9f":
                penalty = 3
            elif ch in COMMON_ACCENTED:
                if long_letter_run:
                    penalty = 1
                elif glued_to_ascii or (prev.isalpha() and nxt.isalpha()):
                    gain = 1
            elif ch.isalpha():
                if glued_to_ascii:
                    penalty = 1
                elif any(c.isalpha() and not c.isascii() and _script(c) == _script(ch) for c in (prev, nxt)):
                    gain = 1
            elif prev.isalpha() and nxt.isalpha() and unicodedata.category(ch)[0] in "SPN":
                penalty = 2
            score += gain - penalty
            if penalty and first_bad < 0:
                first_bad = i
    return score, first_bad


def _sample(data: bytes) -> list[tuple[int, bytes]]:
    """(file offset, bytes) of the lines holding non-ASCII bytes, up to `SAMPLE_BYTES` in all."""
    lines, size = [], 0
    for m in _NON_ASCII_LINES.finditer(data):
        lines.append((m.start(), m.group()))
        size += len(m.group())
        if size >= SAMPLE_BYTES:
            break
    return lines


def _canonical(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return name


#: On a tie a Western code page wins: French "è" reads as Czech "č" in cp1250 and both score alike.
WESTERN = ("cp1252", "iso8859_15", "latin_1")


def read_candidates(data: bytes, detected: str | None) -> list[Reading]:
    """Score every candidate (the detector's first guess, then `CANDIDATES`) that decodes the sample without
    error; best first, ties to `WESTERN`, then in candidate order. The detector's other matches are left out:
    exotic code pages (iso8859_16, mac_*) win ties by reading symbols as letters."""
    sample = _sample(data)
    names: list[str] = []
    for name in [*([detected] if detected else []), *CANDIDATES]:
        if _canonical(name) not in {_canonical(n) for n in names}:
            names.append(name)
    readings = []
    for rank, name in enumerate(names):
        score, bad_offset = 0, -1
        try:
            for offset, line in sample:
                text = line.decode(name)
                line_score, bad = plausibility(text)
                score += line_score
                if bad >= 0 and bad_offset < 0:
                    bad_offset = offset + len(text[:bad].encode(name))
        except (UnicodeDecodeError, LookupError):
            continue
        western = _canonical(name) in {_canonical(w) for w in WESTERN}
        readings.append(((-score, not western, rank), Reading(name, score, bad_offset)))
    return [r for _, r in sorted(readings, key=lambda t: t[0])]
