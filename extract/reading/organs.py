"""Which organs a text names: by one of its words ("renal") or by a location only it has ("lower pole")."""

from __future__ import annotations

import functools
import re

from extract.reading.patterns import trie, trie_safe, words_pattern
from schemas.vocab import ORGAN_IMPLIED_WORDS, ORGAN_WORDS, Organ

_ORGAN_PATTERNS = {organ: words_pattern(words) for organ, words in ORGAN_WORDS.items()}
_IMPLIED_PATTERNS = {organ: words_pattern(words) for organ, words in ORGAN_IMPLIED_WORDS.items()}


def organ_scan(words: dict[Organ, tuple[str, ...]]) -> tuple[re.Pattern[str], dict[str, Organ], frozenset[Organ]]:
    """One pattern that finds, in a single pass, every organ with a word of `words` in a text.

    A zero-width lookahead at each word start holds all words as one trie (so a position costs a few character
    tests, not one test per word), each word ending in its own empty named group: every start position is
    tried, so overlapping words ("gall bladder" and "bladder") are all found, exactly as one `words_pattern`
    search per organ would. Returns the pattern, the organ of each group name and the organs that need their
    own search: those with a word that another organ also has, or that is a whole-word prefix of another organ's
    word ("lymph" / "lymph node"), which the other could hide at a shared start (none in the current tables).
    """
    group_organ: dict[str, Organ] = {}
    tails: dict[str, str] = {}
    for organ, alternatives in words.items():
        for word in alternatives:
            if word.lower() not in tails:
                name = f"g{len(group_organ)}"
                group_organ[name] = organ
                tails[word.lower()] = f"(?P<{name}>)\\b"
    if not trie_safe(tails):
        raise ValueError("organ words must be ASCII")

    hidden = frozenset(
        a_organ for a_organ, a_words in words.items() for b_organ, b_words in words.items() if a_organ is not b_organ
        for a in a_words for b in b_words
        if b.lower().startswith(a.lower()) and (len(b) == len(a) or not re.match(r"\w", b[len(a)])))
    return re.compile(r"\b(?=" + trie(tails) + ")", re.IGNORECASE), group_organ, hidden


_ORGAN_OR_IMPLIED_WORDS = {organ: words + ORGAN_IMPLIED_WORDS.get(organ, ()) for organ, words in ORGAN_WORDS.items()}
_NAMED_SCAN, _NAMED_GROUPS, _NAMED_HIDDEN = organ_scan(_ORGAN_OR_IMPLIED_WORDS)
_NAME_SCAN, _NAME_GROUPS, _NAME_HIDDEN = organ_scan(ORGAN_WORDS)
_NAMED_SEPARATE = {organ: words_pattern(_ORGAN_OR_IMPLIED_WORDS[organ]) for organ in _NAMED_HIDDEN}
_NAME_SEPARATE = {organ: _ORGAN_PATTERNS[organ] for organ in _NAME_HIDDEN}


# The same scans without IGNORECASE, for lower-cased ASCII text (the usual report): a case-sensitive pattern
# rejects a branch on its first character, about twice as fast, and for ASCII text matching lower-cased text
# case-sensitively is exactly matching the text case-insensitively.
_CASED_SCANS = {scan: re.compile(scan.pattern) for scan in (_NAMED_SCAN, _NAME_SCAN)}


def _cased(scan: re.Pattern[str]) -> re.Pattern[str]:
    cased = _CASED_SCANS.get(scan)
    if cased is None:
        cased = _CASED_SCANS[scan] = re.compile(scan.pattern)
    return cased


# The word before a node or a vessel places it ("left gastric node", "renal hilar nodes", "peripancreatic lymph
# nodes", "at the level of the left renal vein"): it names no organ of its own.
_NODE_OR_VESSEL = re.compile(r"\b(?:nod(?:es?|al)|veins?|arter(?:y|ies)|vessels?)\b", re.IGNORECASE)
_BETWEEN = ("lymph", "hilar", "ligament", "chain", "station")  # "splenic hilar lymph nodes"


def _stations_blanked(text: str) -> str:
    lower = text.lower()
    if "nod" not in lower and "vein" not in lower and "arter" not in lower and "vessel" not in lower:
        return text
    chars = None
    for m in _NODE_OR_VESSEL.finditer(text):
        end = m.start()
        while True:  # back over the words that may stand between the placing word and the noun
            stop = len(lower[:end].rstrip())
            begin = max(lower.rfind(" ", 0, stop), lower.rfind("\n", 0, stop)) + 1
            if lower[begin:stop] not in _BETWEEN or begin == 0:
                break
            end = begin
        word = text[begin:stop]
        if word and all(c.isalpha() or c == "-" for c in word):
            chars = chars or list(text)
            chars[begin:stop] = " " * (stop - begin)
    return text if chars is None else "".join(chars)


# Where a metastasis comes from is not where it is ("a pancreatic lesion ... in keeping with a renal cell carcinoma
# metastasis", "liver metastases from a colorectal primary", "history of breast cancer"): those words name no organ.
_CANCER = r"(?:cell\s+)?(?:carcinoma|cancer|adenocarcinoma|primary|melanoma|sarcoma)"
_ORIGIN = re.compile(
    rf"\b((?:[a-z-]+\s+){{1,2}}?{_CANCER})\s+metasta(?:sis|ses|tic)\b"
    rf"|\bmetasta(?:sis|ses|tic\s+disease)\s+(?:from|of)\s+((?:an?\s+|the\s+)?(?:[a-z-]+\s+){{1,2}}?{_CANCER})\b"
    rf"|\bhistory\s+of\s+((?:an?\s+)?(?:[a-z-]+\s+){{1,2}}?{_CANCER})\b",
    re.IGNORECASE)


# "A perifissural nodule, typical of an intrapulmonary lymph node": a lung nodule, not a node of the lymph node key.
_INTRAPULMONARY_NODE = re.compile(r"(?<=intrapulmonary )(?:lymph\s+)?nodes?\b", re.IGNORECASE)


def _lung_nodes_blanked(text: str) -> str:
    if "intrapulmonary" not in text.lower():
        return text
    return _INTRAPULMONARY_NODE.sub(lambda m: " " * len(m.group(0)), text)


# "at the lower pole of the spleen": a pole of the organ named after it, not a kidney's
_POLE_OF_ANOTHER = re.compile(r"\b(?:upper|lower)\s+pole(?=\s+of\s+(?:the\s+)?(?!(?:left|right|both|each|transplant)\b|"
                              r"kidneys?\b|renal\b)[a-z]+)", re.IGNORECASE)


def _poles_blanked(text: str) -> str:
    if "pole of" not in text.lower():
        return text
    return _POLE_OF_ANOTHER.sub(lambda m: " " * len(m.group(0)), text)


def _origins_blanked(text: str) -> str:
    lower = text.lower()
    if "metasta" not in lower and "history" not in lower:
        return text
    chars = list(text)
    for m in _ORIGIN.finditer(text):
        group = next(k for k in (1, 2, 3) if m.group(k))
        chars[m.start(group):m.end(group)] = " " * (m.end(group) - m.start(group))
    return "".join(chars)


def scan_organs(text: str, scan: re.Pattern[str], groups: dict[str, Organ],
                separate: dict[Organ, re.Pattern[str]]) -> set[Organ]:
    if text.isascii():
        found = {groups[m.lastgroup] for m in _cased(scan).finditer(text.lower())}
    else:
        found = {groups[m.lastgroup] for m in scan.finditer(text)}
    found.update(organ for organ, pattern in separate.items() if pattern.search(text))
    if not found:
        return set()
    # Built in vocabulary order, as the per-organ loop it replaces built it (set iteration order included).
    return {organ for organ in _ORGAN_PATTERNS if organ in found}


def organ_named_in_text(organ: Organ, text: str) -> bool:
    """Whether `text` names `organ`, by name ("renal") or by a location only it has ("lower pole")."""
    implied = _IMPLIED_PATTERNS.get(organ)
    text = _stations_blanked(text)
    return bool(_ORGAN_PATTERNS[organ].search(text) or (implied is not None and implied.search(text)))


# Cached: a report asks about the same sentence several times, and templated sentences recur across reports. The
# tuple keeps vocabulary order, and the set is rebuilt in that order, as `scan_organs` builds it.
@functools.lru_cache(maxsize=8192)
def _named_organs(text: str, by_word_only: bool) -> tuple[Organ, ...]:
    # before the stations: "intrapulmonary" would be blanked as the word that places the node
    blanked = _stations_blanked(_origins_blanked(_lung_nodes_blanked(_poles_blanked(text))))
    if by_word_only:
        return tuple(scan_organs(blanked, _NAME_SCAN, _NAME_GROUPS, _NAME_SEPARATE))
    return tuple(scan_organs(blanked, _NAMED_SCAN, _NAMED_GROUPS, _NAMED_SEPARATE))


def named_organs(text: str) -> set[Organ]:
    """Every organ `text` names, by name or implied location."""
    return {organ for organ in _named_organs(text, False)}


def organs_named_by_word(text: str) -> set[Organ]:
    """Every organ `text` names by one of its `ORGAN_WORDS` (implied locations do not count)."""
    return {organ for organ in _named_organs(text, True)}
