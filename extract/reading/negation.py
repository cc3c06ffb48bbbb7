"""Negated and history wording, and how a sentence speaks of a lesion of an organ once that is set aside."""

from __future__ import annotations

import functools
import re

from extract.reading.lesion_words import lesion_word_in_text
from extract.reading.measurements import current_measurements
from extract.reading.patterns import words_alternation, words_pattern
from extract.reading.sentences import CLAUSE_BREAK, clauses
from schemas.vocab import NEGATION_CUES, NOT_CURRENT_CUES, POST_NEGATION_CUES, PRESENCE_HEDGES, Organ

# "not" is a negation except in hedges ("is not excluded"), which keep the lesion possible.
_PRE_NEGATION = re.compile(
    r"\b(?:" + words_alternation(w for w in NEGATION_CUES if w != "not")
    + r"|not(?!\s+(?:be\s+)?(?:excluded|ruled out))\b)", re.IGNORECASE)
_POST_NEGATION = words_pattern(POST_NEGATION_CUES)
_BARE_PREDICATE = re.compile(r"\s*(?:and\s+)?(?:(?:now|also|likewise|since|then)\s+)*(?:is|are|has|have|had)\s+"
                             r"(?:(?:been|now|also|since|then)\s+)*", re.IGNORECASE)
_NOT_BEFORE = re.compile(r"\bnot\s+$", re.IGNORECASE)
_SUBJECT_FIRST = re.compile(r"\s*(?:the|this|that|these|those|its?|an?)\b", re.IGNORECASE)
_ON_EARLIER_STUDY = re.compile(r"\s*(?:(?:on|in|at)\s+(?:the\s+)?(?:prior|previous|earlier|preceding|last|older|"
                               r"comparison)\b|(?:[\w-]+\s+){1,3}ago\b|previously\b|before\b)", re.IGNORECASE)
# "known", "from" and "metastatic" mark history or origin only before a disease word ("known colon cancer",
# "metastasis from renal cell carcinoma", "metastatic renal cell carcinoma"), not in "the known 2 cm lesion".
_NOT_CURRENT = re.compile(
    r"\b(?:" + "|".join(re.escape(w) for w in NOT_CURRENT_CUES if w not in ("known", "from"))
    + r"|(?:known|from)(?=(?:\s+[\w-]+){0,2}?\s+(?:cancer|carcinoma|malignancy|lymphoma|disease|primary)\b)"
    + r"|metastatic(?=(?:\s+[\w-]+){0,2}?\s+(?:cancer|carcinoma)\b))\b",
    re.IGNORECASE)
_PRESENCE_HEDGE = words_pattern(PRESENCE_HEDGES)
# "Another, 8 mm, lies in segment 3": a lesion whose word is left out after "another" or "a second".
_ELLIPTIC_LESION = re.compile(r"^(?:another|a\s+(?:second|third|fourth))\s*,?\s+(?:[\w-]+\s+){0,2}?"
                              r"\d+(?:\.\d+)?\s*(?:mm|cm)\b", re.IGNORECASE)
_BRACKETS = re.compile(r"\([^()]*\)")
_NEGATION_END = re.compile(r"[;.]|\b(?:but|however|except|other than|whereas)\b", re.IGNORECASE)


#: A node's short axis of 10 mm or more is enlarged, whether or not the report says so (RECIST 1.1).
_SHORT_AXIS = re.compile(r"^\s*(?:in\s+)?short[\s-]+axis\b", re.IGNORECASE)
ENLARGED_NODE_SHORT_AXIS_MM = 10.0


def _enlarged_by_size(blanked: str) -> bool:
    """Whether a (negation-blanked) sentence gives a node's current short axis of 10 mm or more."""
    if "axis" not in blanked.lower() or _NORMAL_SIZE.search(blanked):
        return False
    return any(_SHORT_AXIS.match(blanked[m.end:]) and min(m.diameters_mm) >= ENLARGED_NODE_SHORT_AXIS_MM
               and not _BOUND_OR_PAST_BEFORE.search(blanked[max(0, m.start - 25):m.start])
               and not _THEN_AFTER.match(blanked[m.end:]) for m in current_measurements(blanked))


# "each under 1 cm in short axis": a bound; "reached 14 mm ... at the time of the infection": a past size
_BOUND_OR_PAST_BEFORE = re.compile(r"\b(?:reached|under|below|less than|smaller than)\s*$|<\s*$", re.IGNORECASE)
_THEN_AFTER = re.compile(r"^\s*(?:in\s+)?short[\s-]+axis\s+(?:at the time|on the (?:prior|previous|earlier)|"
                         r"previously)", re.IGNORECASE)
_NORMAL_SIZE = re.compile(r"\b(?:normal (?:size|limits)|normal in size|returned to normal)\b", re.IGNORECASE)


# Cached: one report asks about the same sentence several times, and templated sentences recur across reports.
@functools.lru_cache(maxsize=4096)
def negated_blanked(text: str) -> str:
    """`text` with negated stretches blanked: from a negation cue to the clause end ("no focal lesion"), and
    the clause before a closing cue ("the segment 8 lesion has resolved")."""
    chars = list(text)
    for m in [*_PRE_NEGATION.finditer(text), *_NOT_CURRENT.finditer(text)]:
        stop = _NEGATION_END.search(text, m.end())
        end = stop.start() if stop else len(text)
        chars[m.start():end] = " " * max(0, end - m.start())
    # a comma inside brackets ("(series 3, image 140) has resolved") does not end the clause the cue closes
    unbracketed = _BRACKETS.sub(lambda b: " " * len(b.group(0)), text) if "(" in text else text
    for m in _POST_NEGATION.finditer(text):
        if _ON_EARLIER_STUDY.match(text, m.end()) or (m.group(0).lower().endswith("at baseline")
                                                      and _NOT_BEFORE.search(text, 0, m.start())):
            continue  # "a new 4 mm nodule, which was not present 2 months ago (at baseline)": new, so present now
        breaks = [b.end() for b in CLAUSE_BREAK.finditer(unbracketed, 0, m.start())]
        # "The 6 mm nodule that was seen in 2021, and had become smaller by 2022, is no longer seen": a cue with
        # no subject in its clause closes the sentence's subject (from the sentence start) or the clause before
        if breaks and _BARE_PREDICATE.fullmatch(text[breaks[-1]:m.start()]):
            breaks = [] if _SUBJECT_FIRST.match(text) else breaks[:-1]
        begin = breaks[-1] if breaks else 0
        chars[begin:m.end()] = " " * max(0, m.end() - begin)
    return "".join(chars)


@functools.lru_cache(maxsize=4096)
def lesion_assertion(organ: Organ, sentence: str) -> str:
    """How a sentence speaks of a lesion of `organ`: `definite` (an unnegated lesion word in a clause without
    doubt, or "Another, 8 mm, ..."), `possible` (lesion words only in clauses that doubt it: "a neoplasm cannot be
    excluded") or `none` (no lesion word outside negations: "no focal lesion", "the lesion has resolved",
    "kidneys: normal")."""
    blanked = negated_blanked(sentence)
    asserted = [(a, b) for a, b in clauses(sentence) if lesion_word_in_text(organ, blanked[a:b])]
    if not asserted:
        return "definite" if _ELLIPTIC_LESION.match(blanked) or (
            organ is Organ.LYMPH_NODE and _enlarged_by_size(blanked)) else "none"
    if all(_PRESENCE_HEDGE.search(sentence[a:b]) for a, b in asserted):
        return "possible"
    return "definite"


def item_assertion(organ: Organ, sentence: str, title: str) -> str:
    """`lesion_assertion` of a sentence that may be an item of a list titled `title` (`sentences.list_title`):
    an item with no lesion word of its own that gives a current size stands for a lesion when its title names
    one ("Current nodules:" above "1. Right upper lobe, apical segment: solid, 9 x 7 mm"; "Resolved nodules:"
    names none), or when its label is a RECIST target's ("Target 2: liver segment 4a, 22 mm")."""
    found = lesion_assertion(organ, sentence)
    if found == "none" and TARGET_LABEL.match(sentence):
        title = title or "target lesion"  # "Target 2: liver segment 4a, 29 mm -> 22 mm": a RECIST target lesion
    if found != "none" or not title or lesion_word_in_text(organ, sentence):
        return found
    if _POST_NEGATION.search(title) or _EARLIER_TITLE.search(title) or not current_measurements(
            negated_blanked(sentence)):
        return "none"
    return lesion_assertion(organ, f"{title}: {sentence}")


#: "Target 2:", "Target lesion 1:", "Non-target 3:": the label of a RECIST target line.
TARGET_LABEL = re.compile(r"^\s*(?:non-?\s*)?target(?:\s+(?:lesion|nodule|node))?\s*(?:no\.?\s*|#\s*)?\d{1,2}\s*:",
                           re.IGNORECASE)
_EARLIER_TITLE = re.compile(r"\b(?:prior|previous(?:ly)?|former|baseline)\b", re.IGNORECASE)
