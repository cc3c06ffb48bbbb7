"""Words that say what a finding is: a lesion of an organ, more than one, its composition, its attenuation."""

from __future__ import annotations

import re

from extract.reading.patterns import words_pattern
from schemas.vocab import ATTENUATION_WORDS, COMPOSITION_WORDS, GROUP_WORDS, LESION_WORDS, ORGAN_LESION_WORDS, Organ

_ATTENUATION_PATTERNS = {value: words_pattern(words) for value, words in ATTENUATION_WORDS.items()}
_LESION_PATTERN = words_pattern(LESION_WORDS)
_ORGAN_LESION_PATTERNS = {organ: words_pattern(LESION_WORDS + words) for organ, words in ORGAN_LESION_WORDS.items()}
_COMPOSITION_PATTERNS = {value: words_pattern(words) for value, words in COMPOSITION_WORDS.items()}
_GROUP_PATTERN = words_pattern(GROUP_WORDS)


def lesion_word_in_text(organ: Organ, text: str) -> bool:
    """Whether `text` holds a word naming a focal lesion of `organ` ("mass", "cyst"; "thickening" for hollow
    organs; "enlarged" for lymph nodes)."""
    return bool(_ORGAN_LESION_PATTERNS.get(organ, _LESION_PATTERN).search(text))


def group_word_in_text(text: str) -> bool:
    """Whether `text` speaks of more than one lesion ("multiple", "two", plural lesion nouns)."""
    return bool(_GROUP_PATTERN.search(text))


def composition_in_text(text: str) -> str | None:
    """`fat_containing`, `calcified` or `cystic` as a phrase states it, else None (fat and calcium win over
    "cystic", which they may qualify)."""
    for value in ("fat_containing", "calcified", "cystic"):
        if _COMPOSITION_PATTERNS[value].search(text):
            return value
    return None


_NOT_ENHANCING = re.compile(r"\b(?:non|not|without)[\s-]*(?:\w+\s+)?enhanc\w*", re.IGNORECASE)


def attenuation_in_text(text: str) -> str | None:
    """The attenuation a phrase states (`hypo`, `hyper`, `iso`, `heterogeneous`), or None.

    Heterogeneous wins over enhancement words ("heterogeneously enhancing" is heterogeneous); hypo-/iso- words
    win over the bare word "enhancing" that they contain.
    """
    text = _NOT_ENHANCING.sub(" ", text)  # "non-enhancing" says nothing about hyperenhancement
    for value in ("heterogeneous", "hypo", "iso", "hyper"):
        if _ATTENUATION_PATTERNS[value].search(text):
            return value
    return None
