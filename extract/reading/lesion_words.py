"""Words that say what a finding is: a lesion of an organ, more than one, its composition, its attenuation."""

from __future__ import annotations

import re

from extract.reading.organs import named_organs
from extract.reading.patterns import words_pattern
from schemas.vocab import (
    ATTENUATION_WORDS,
    COMPOSITION_WORDS,
    GROUP_WORDS,
    LESION_TYPE_WORDS,
    LESION_WORDS,
    ORGAN_LESION_WORDS,
    TYPE_ORGANS,
    LesionType,
    Organ,
)

_ATTENUATION_PATTERNS = {value: words_pattern(words) for value, words in ATTENUATION_WORDS.items()}
_LESION_PATTERN = words_pattern(LESION_WORDS)
_ORGAN_LESION_PATTERNS = {organ: words_pattern(LESION_WORDS + words) for organ, words in ORGAN_LESION_WORDS.items()}
_COMPOSITION_PATTERNS = {value: words_pattern(words) for value, words in COMPOSITION_WORDS.items()}
_GROUP_PATTERN = words_pattern(GROUP_WORDS)
_TYPE_PATTERNS = tuple((kind, words_pattern(words)) for kind, words in LESION_TYPE_WORDS)


def lesion_word_in_text(organ: Organ, text: str) -> bool:
    """Whether `text` holds a word naming a focal lesion of `organ` ("mass", "cyst"; "thickening" for hollow
    organs; "enlarged" for lymph nodes); "honeycomb cysts" of fibrosis name none, nor does a ground-glass opacity
    that is neither sized nor focal ("Ground-glass opacity is minimal and confined to areas of reticulation")."""
    lowered = text.lower()
    if "honeycomb" in lowered or "cystic change" in lowered:
        text = _NOT_A_LESION_PHRASE.sub(" ", text)
    if "opacit" in lowered and not _SIZE_OR_FOCAL.search(text):
        text = _GROUND_GLASS.sub(" ", text)
    return bool(_ORGAN_LESION_PATTERNS.get(organ, _LESION_PATTERN).search(text))


_GROUND_GLASS = re.compile(r"\bground[- ]glass\s+opacit(?:y|ies)\b", re.IGNORECASE)
_SIZE_OR_FOCAL = re.compile(r"\d\s*(?:mm|cm)\b|\b(?:focal|nodular|rounded|round|persistent|part-solid)\b",
                            re.IGNORECASE)
_NOT_A_LESION_PHRASE = re.compile(r"\bhoneycomb(?:ing)?(?:\s+(?:cysts?|change))?\b|\bcystic\s+change\b", re.IGNORECASE)


def group_word_in_text(text: str) -> bool:
    """Whether `text` speaks of more than one lesion ("multiple", "two", plural lesion nouns); a leading label
    that only names the organs of its section ("Lymph nodes: An enlarged left hilar node ...") does not, nor does a
    quantifier of something else ("a 12 mm nodule with a few small bubbly lucencies", "both lower lobes")."""
    text = _ORGAN_LABEL.sub(_blank_organ_label, text, count=1)
    return any(m.group(0).lower() in _PLURAL_LESIONS or not _quantifies_other_things(text[m.end():])
               for m in _GROUP_PATTERN.finditer(text))


#: The words a quantifier qualifies: up to the next punctuation or conjunction, at most five words.
_QUANTIFIED = re.compile(r"^((?:\s+(?!and\b|or\b|with\b)[A-Za-z-]+){1,5})")
#: Lesion words by their first five letters, so "micronodules" and "hypodensities" read as lesions.
_LESION_STEMS = tuple(sorted({w[:5].lower() for w in LESION_WORDS + tuple(w for ws in ORGAN_LESION_WORDS.values()
                                                                            for w in ws) if " " not in w}))


#: Plurals without an s that reports quantify ("a cyst with multiple thin septa").
_LATIN_PLURALS = frozenset({"septa", "septae", "bullae", "vertebrae", "media", "data"})


def _quantifies_other_things(after: str) -> bool:
    """Whether the first plural noun after a quantifier names no lesion ("lucencies", "lower lobes", "weeks");
    "Several are calcified" and "multiple, bilateral" quantify the lesions of the sentence."""
    m = _QUANTIFIED.match(after)
    if m is None:
        return False
    words = m.group(1).lower().split()
    for i, word in enumerate(words):  # up to the first plural noun: what the quantifier counts
        if any(stem in word for stem in _LESION_STEMS):
            return False
        plural = word in _LATIN_PLURALS or (
            len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")))
        if plural and words[i + 1:i + 2] != ["of"]:  # "multiple sites of metastatic disease" reads on
            return True
    return False


_ORGAN_LABEL = re.compile(r"^\s*([A-Za-z][A-Za-z /&,()'-]{0,40}):\s")


#: A report's category label ("New lesions:", "Non-target lesions:"): its plural names a section, not a group.
_CATEGORY_LABEL = re.compile(r"^(?:new|(?:non-?\s*)?target|index|other|additional)\s+[a-z]+$", re.IGNORECASE)


def _blank_organ_label(m: re.Match[str]) -> str:
    label = m.group(1)
    blank = (named_organs(label) or _CATEGORY_LABEL.match(label.strip())) and not _QUANTIFIER_PATTERN.search(label)
    return " " * len(m.group(0)) if blank else m.group(0)


_NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
                 "eleven": 11, "twelve": 12, "a dozen": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "twenty": 20}
_PLURAL_LESIONS = tuple(w for w in GROUP_WORDS if w.endswith(("s", "i")) and w not in ("bilaterally", "various"))
#: The group words that are not plural lesion nouns ("several", "both", "two"): they quantify, a label "Lymph nodes:"
#: does not.
_QUANTIFIER_PATTERN = words_pattern(tuple(w for w in GROUP_WORDS if w not in _PLURAL_LESIONS))
#: A number of lesions, in words or digits (one group).
_NUMBER = r"(" + "|".join(_NUMBER_WORDS) + r"|[2-9]|[1-9]\d)"
_PLURAL_NOUN = r"(?:" + "|".join(re.escape(w) for w in _PLURAL_LESIONS) + r")"
# "two further, smaller hypodense lesions": a comma may part the words between the number and its noun
_STATED_COUNT = re.compile(rf"\b{_NUMBER}(?!\s*(?:mm|cm|x)\b)\s+(?:[a-z-]+,?\s+){{0,3}}?{_PLURAL_NOUN}\b",
                           re.IGNORECASE)


#: A number set off after the plural lesion noun it counts: "numerous nodules in both lungs, at least fifteen, ...".
#: A bare number needs "in number" after it: "lesions in segments 2, 3, and 8" lists places.
_APPOSED_COUNT = re.compile(rf"\b{_PLURAL_NOUN}\b[^.;:,]{{0,40}},\s*"
                            rf"(?:(at least\s+|more than\s+|no fewer than\s+){_NUMBER}\s*"
                            rf"(?=[,.;)]|$|in (?:all|number|total)\b)|(){_NUMBER}\s+in number\b)", re.IGNORECASE)
_AT_LEAST = re.compile(r"\b(?:at least|more than|over|no fewer than|a minimum of)\s*$", re.IGNORECASE)


def _number_value(word: str) -> int:
    return _NUMBER_WORDS.get(word.lower()) or int(word)


def stated_count(text: str) -> tuple[int, bool] | None:
    """The number of lesions a phrase states and whether it is exact ("three hypodense lesions": (3, True);
    "at least five nodules": (5, False); "numerous nodules in both lungs, at least fifteen, ...": (15, False)),
    or None."""
    m = _STATED_COUNT.search(text)
    if m is None:
        apposed = _APPOSED_COUNT.search(text)
        if apposed is None:
            return None
        return _number_value(apposed.group(2) or apposed.group(4)), not apposed.group(1)
    return _number_value(m.group(1)), not _AT_LEAST.search(text[:m.start()])


#: "three in total", "a total of eight nodules", "The total is therefore eight nodules", "five altogether".
_STATED_TOTAL = re.compile(rf"\b{_NUMBER}(?!\s*(?:mm|cm|x)\b)\s+(?:[a-z-]+\s+){{0,3}}?(?:in total|in all|altogether)\b"
                           r"(?!\s+(?:diameter|size|length|volume|dimension))|"
                           rf"\b(?:a total of|the total is(?:\s+therefore)?|totall?ing)\s+{_NUMBER}\b"
                           r"(?!\s*(?:mm|cm)\b)", re.IGNORECASE)


def stated_total(text: str) -> int | None:
    """The total number of lesions a phrase states in so many words ("three in total", "a total of eight"), or
    None."""
    m = _STATED_TOTAL.search(text)
    return None if m is None else _number_value(m.group(1) or m.group(2))


def count_in_text(text: str) -> int | None:
    """The number of lesions a phrase states ("three hypodense lesions", "2 solid nodules"), or None."""
    found = stated_count(text)
    return found[0] if found else None


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


def kind_in_text(organ: Organ, text: str) -> LesionType:
    """The lesion kind a phrase names for `organ` (`LESION_TYPE_WORDS`, most specific first; a kind that
    `TYPE_ORGANS` ties to other organs is skipped), else `lesion_unspecified`. Pass the text with negated
    stretches blanked (`negation.negated_blanked`) so "no metastasis" names no kind."""
    for kind, pattern in _TYPE_PATTERNS:
        allowed = TYPE_ORGANS.get(kind)
        if (allowed is None or organ in allowed) and pattern.search(text):
            return kind
    return LesionType.LESION_UNSPECIFIED
