"""Current (not prior) measurements in report wording, and groups split into their sized members."""

from __future__ import annotations

import re

from extract.reading.lesion_words import attenuation_in_text, composition_in_text
from extract.reading.locations import side_in_text, subsegments_in_text
from extract.reading.organs import named_organs
from schemas.measure import find_measurements
from schemas.vocab import PAIRED_ORGANS, Organ

_PRIOR_WORDS = re.compile(r"\b(?:previous(?:ly)?|prior|was|were|from|compared|baseline|earlier|before|then)\b",
                          re.IGNORECASE)


def is_prior_size(size_text: str, sentence: str) -> bool:
    """Whether every place `sentence` writes `size_text` follows "previously", "prior", "was", "from" ..."""
    spots = [m.start() for m in re.finditer(re.escape(size_text), sentence, re.IGNORECASE)]
    return bool(spots) and all(_PRIOR_WORDS.search(sentence[max(0, i - 25): i]) for i in spots)


def size_from_quote(organ: Organ, text: str):
    """The one current measurement of `organ` a quote holds when the model left `size` empty (a
    `schemas.measure` measurement); None when it holds none or several. Sizes right after "previously", "prior",
    "was", "from" are earlier studies' and never count; the same size written again ("A 7 mm nodule ... It now
    measures 7 mm") is one."""
    found = organ_measurements(organ, text)
    return found[0] if len({m.diameters_mm for m in found}) == 1 else None


#: The words a size qualifies: at most three, within its clause ("4.2 cm pancreatic head primary").
_SIZED_WORDS = re.compile(r"^(?:\s+(?!(?:with|and|in|of|near|to)\b)[A-Za-z-]+){1,3}", re.IGNORECASE)


def organ_measurements(organ: Organ, text: str) -> list:
    """`current_measurements` of `text` less those of another organ's finding ("... liver metastases and a
    4.2 cm pancreatic head primary": not a liver size), told by the words right after the size."""
    found = []
    for m in current_measurements(text):
        after = _SIZED_WORDS.match(text[m.end:])
        named = named_organs(after.group(0)) if after else set()
        if not named or organ in named:
            found.append(m)
    return found


#: A lesion's part, whose size is not the lesion's.
_LESION_PART = r"(?:components?|rim|wall|septations?|calcifications?)"
#: Verbs of "previously described": a lesion known before, not a size measured before.
_KNOWN_VERBS = (r"(?:described|noted|seen|identified|reported|demonstrated|mentioned|known|visuali[sz]ed|"
                r"characteri[sz]ed)")
_PART_OF_LESION = re.compile(rf"^\s*(?:\w+\s+){{0,2}}?{_LESION_PART}\b", re.IGNORECASE)


# "with a solid component of 6 mm": the size of a lesion's part, written after the part.
_PART_BEFORE = re.compile(rf"\b{_LESION_PART}\s+(?:of|measuring|measures|"
                          r"(?:that|which)\s+(?:has\s+)?(?:increased|grown|decreased|enlarged)[^.;,]{0,20}?\bto)\s+"
                          r"(?:about\s+|approximately\s+)?$", re.IGNORECASE)
# "7 x 5 mm (mean diameter 6 mm)": the size just written, averaged.
_AVERAGE_OF_PREVIOUS = re.compile(r"^\W{0,3}(?:mean|average)(?:\s+diameter)?(?:\s+of)?\s*$", re.IGNORECASE)
# "9 mm seven months ago", "7 mm on the study of 14 months ago", "it measured 7 mm previously"
_ON_EARLIER_STUDY = re.compile(r"^\s*(?:(?:on|at|in)\s+the\s+(?:earlier|prior|previous|preceding|last|older)\b|"
                               rf"(?:previously|before|earlier)\b(?!\s+{_KNOWN_VERBS})"
                               r"(?!\s+(?:measur\w+\s+|at\s+)?\d(?:\.\d+)?\s*(?:mm|cm)\b)|"
                               r"(?:[\w-]+\s+){1,3}ago\b|(?:on|at|in)\s+the\s+(?:study|exam(?:ination)?|scan|ct)\s+"
                               r"(?:of|from)\s+(?:[\w-]+\s+){1,3}ago\b)", re.IGNORECASE)


#: An organ's length, not a lesion's size ("Both kidneys are enlarged (right 19 cm, left 21 cm in length)").
_ORGAN_LENGTH = re.compile(r"^[^.;()]{0,40}?\b(?:in length|long\b(?!\s+segment)|in (?:craniocaudal|cc|bipolar) "
                           r"(?:length|dimension|extent)|craniocaudal(?:ly)?\b|in span)", re.IGNORECASE)
_SIZED_ORGAN = r"(?:spleen|liver|kidneys?|pancreas|prostate|uterus|thyroid)"
_ENLARGED_AT = r"(?:(?:mildly|moderately|markedly)\s+)?enlarged\s+(?:at|to)"
#: An organ's own size, written after the organ ("The spleen is enlarged at 16 cm", "the liver spans 21 cm").
_ORGAN_SIZE_BEFORE = re.compile(rf"(?:(?:^|\bthe\s+){_SIZED_ORGAN}\s+(?:(?:is|are)\s+{_ENLARGED_AT}|measures|spans)|"
                                rf"^{_SIZED_ORGAN}:\s*{_ENLARGED_AT})\s+(?:about\s+|approximately\s+)?$", re.IGNORECASE)
_NOW = re.compile(r"\b(?:now|currently|today)\b", re.IGNORECASE)
_KNOWN_BEFORE = re.compile(rf"\b(?:previously|prior)\s+{_KNOWN_VERBS}\b", re.IGNORECASE)
#: "40 mm -> 31 mm": the size before an arrow to another is the earlier one.
_THEN_ARROW = re.compile(r"^\s*(?:->|\u2192|=>)\s*\d")
#: Two sizes joined as one reading ("previously 5 and 7 mm"): the second is as prior as the first.
_JOINED = re.compile(r"\s*(?:,|and|&|/)?\s*")


#: A clause in the past tense that dates itself earlier ("it measured 12 mm with a 3 mm solid component a year
#: ago", "which measured 7 x 6 mm on the study of 14 months ago"): every size in it is an earlier one.
_EARLIER_CLAUSE = re.compile(r"(?:^|[;,(]|\.(?!\d))\s*(?:(?:it|this|which|they|these)\s+)?(?:measured|was|were)\b"
                             r"[^;.()]*?\b(?:ago|at baseline|on the (?:prior|previous|earlier|preceding)\b|"
                             r"in (?:19|20)\d\d)\b[^;()]*?(?=[;()]|\.(?!\d)|$)", re.IGNORECASE)


def current_measurements(text: str) -> list:
    """Measurements in `text` of lesions now: not prior sizes (no "previously"/"prior"/... just before them, no
    "on the earlier study" after them, not in a clause that dates itself earlier), not the size of a lesion's
    part ("with a 3 mm solid component", "a solid component of 3 mm") and not an organ's size ("right 19 cm,
    left 21 cm in length", "the spleen is enlarged at 16 cm")."""
    current, previous_end, previous_prior = [], 0, False
    earlier = [(c.start(), c.end()) for c in _EARLIER_CLAUSE.finditer(text)] if "ago" in text or "in 19" in text \
        or "in 20" in text or "baseline" in text.lower() or "on the " in text else []
    squared = [(b.start(), b.end()) for b in _SQUARE_BRACKETS.finditer(text)] if "[" in text else []
    for m in find_measurements(text):
        # "11 x 9 mm (image 52) [previously 9 x 8 mm]", "5 mm [5 mm]": square brackets hold the prior size
        if any(a <= m.start < b for a, b in earlier) or any(a < m.start < b for a, b in squared):
            previous_end, previous_prior = m.end, True
            continue
        # The prior word must be this size's own: in "RUL 6 mm (prior 5 mm); LLL 4 mm" it belongs to the 5 mm.
        # ... and not across a colon: "new since the prior examination: 1.7 cm in the tail" is current
        between = text[max(previous_end, m.start - 25): m.start].rsplit(":", 1)[-1]
        between = _KNOWN_BEFORE.sub(" ", between)  # "the previously noted 7 mm cyst": known before, sized now
        earlier_word = _PRIOR_WORDS.search(between)
        # "measuring 8 mm before, now 10 mm": a "now" after the prior word dates the size to this study
        prior = (bool(earlier_word) and not _NOW.search(between, earlier_word.end())) or (
            previous_prior and bool(_JOINED.fullmatch(between)))
        averaged = previous_end > 0 and bool(_AVERAGE_OF_PREVIOUS.match(text[previous_end:m.start]))
        previous_end, previous_prior = m.end, prior
        if not (prior or averaged or _PART_OF_LESION.match(text[m.end: m.end + 40]) or _ORGAN_LENGTH.match(text[m.end:])
                or _PART_BEFORE.search(text[max(0, m.start - 60): m.start]) or _ON_EARLIER_STUDY.match(text[m.end:])
                or _ORGAN_SIZE_BEFORE.search(text[max(0, m.start - 50): m.start]) or _THEN_ARROW.match(text[m.end:])):
            current.append(m)
    return current


_LARGEST = re.compile(r"\b(?:(?:the\s+)?(?:largest|dominant|biggest)|up to)\b", re.IGNORECASE)
# A sentence that only sizes the largest member of the group before it ("The largest measures 4.5 cm.").
_LARGEST_FOLLOW_UP = re.compile(r"^(?:(?:for reference|of these|of them|among them),?\s+)?(?:the\s+)?"
                                r"(?:largest|dominant|biggest)\b", re.IGNORECASE)


# "It now measures 21 mm": the size of what the sentence before described.
_IT_MEASURES = re.compile(r"^(?:it|this(?:\s+(?:lesion|nodule|mass|one))?)\s+(?:now\s+|currently\s+)?"
                          r"(?:measures|measured|spans)\b", re.IGNORECASE)


def is_largest_follow_up(sentence: str) -> bool:
    """Whether `sentence` only sizes the largest member of the group before it."""
    return bool(_LARGEST_FOLLOW_UP.match(sentence))


def is_size_follow_up(sentence: str) -> bool:
    """Whether `sentence` only sizes what the sentence before described ("It now measures 21 mm")."""
    return bool(_IT_MEASURES.match(sentence))


def names_place(organ: Organ, text: str) -> bool:
    """Whether `text` names a sub-segment of `organ` or, for a paired organ, a side."""
    return bool(subsegments_in_text(organ, text)) or (organ in PAIRED_ORGANS and side_in_text(text) is not None)


_LIST_MEMBER_WORDS = 14
_NOT_A_MEMBER = re.compile(r"\b(?:duct|dilat\w*|wall|thicken\w*|span|length|aorta|calib(?:er|re))\b", re.IGNORECASE)


def is_bare_member(organ: Organ, words: str, lesion_word: bool) -> bool:
    """Whether a sentence sizes a member of the group before it without a word of its own saying what it is
    ("Right upper lobe, 5 mm (series 3, image 41)."): short, a current size and a place of the organ, no duct,
    wall or span; `lesion_word`: whether it holds a lesion word of the organ outside negations."""
    unbracketed = _BRACKETED.sub(" ", words)  # "(series 5, image 120)" says nothing of what it is
    limit = _LIST_MEMBER_WORDS + (6 if _ONE_OF_THEM.match(words) else 0)  # "One lies in ...; the other is in ..."
    return (len(unbracketed.split()) <= limit and bool(current_measurements(words))
            and names_place(organ, words) and not lesion_word and not _NOT_A_MEMBER.search(words))


_SQUARE_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_BRACKETED = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_ONE_OF_THEM = re.compile(r"^\s*(?:(?:one|two|three|four|both)\b(?:\s+of\s+(?:them|these))?|the other|another|"
                          r"the (?:first|second|third|last|remaining)|a (?:second|third))\b", re.IGNORECASE)


#: "each 3 to 4 mm", "the two ..., each 10 mm": one size for each of several lesions.
EACH_WORD = re.compile(r"\beach\b", re.IGNORECASE)
_NEXT_CLAUSE = re.compile(r";|,\s*(?:and|while|whereas|but)\b|\.\s", re.IGNORECASE)


def split_by_measurement(record: dict, text: str) -> list[dict]:
    """A group record whose words size its members one by one ("1.1 cm in segment 2 and 3.4 cm in segment 7",
    "right 1.4 cm and left 2.6 cm") becomes one record per current measurement, each with the side and
    sub-segments written next to it, plus an unsized rest when a stated number exceeds the sizes and a size is for
    "each" of several. A group whose one measurement is its largest member's ("the largest 1.8 cm in the right
    lower lobe") becomes that member plus the unsized rest (the stated number less one, or at least one more).
    Anything else is returned unchanged."""
    group = record["count"] > 1 or not record["count_exact"]
    organ = Organ(record["organ"])
    found = organ_measurements(organ, text)
    if not group or not found:
        return [record]
    def member(window: str, diameters: tuple[float, ...], reported: str) -> dict:
        side = side_in_text(window) if organ in PAIRED_ORGANS else None
        segments = [s.value for s in subsegments_in_text(organ, window)]
        # "a 5 mm hypoattenuating focus ... and a 2.1 cm cyst": each member's own words say what it is
        attenuation, composition = attenuation_in_text(window), composition_in_text(window)
        own = {"attenuation": attenuation or "unknown", "composition": composition or "unknown"} if (
            attenuation or composition) else {}
        return {**record, **own, "count": 1, "count_exact": True, "innumerable": False,
                "laterality": side if side in ("left", "right") else
                (record["laterality"] if record["laterality"] != "bilateral" else None),
                "segments": segments or record["segments"],
                "size": {"status": "measured", "diameters_mm": list(diameters), "reported_text": reported,
                         "refers_to": "lesion"}}
    # "Three nodules: a 6 mm ..., a 4 mm ... and a 3 mm .... The largest measures 6 mm.": the largest is one of them
    written = found
    found = [m for k, m in enumerate(written) if not (
        _LARGEST.search(text[written[k - 1].end:m.start] if k else "")
        and any(o.diameters_mm == m.diameters_mm for o in written[:k]))]
    if len(found) >= 2:
        parts = []
        # "segment 4 (8 mm), segment 6 (1.1 cm)" places each size after its location; "1.1 cm in segment 2
        # and 3.4 cm in segment 7" before it. Which one: where the first and the last size find a place.
        lead, tail = text[:written[0].start], text[written[-1].end:]
        place_first = names_place(organ, lead) and not names_place(organ, tail)
        for i, m in enumerate(found):
            if place_first:  # from the previous size (for the first: from its own sentence's start) to this one
                window = text[found[i - 1].end if i else max(lead.rfind(". "), lead.rfind("; ")) + 1: m.start]
            else:
                before = text[max(0, m.start - 12): m.start]
                after = text[m.end: found[i + 1].start if i + 1 < len(found) else len(text)]
                window = before.split(",")[-1] + " " + after
                if not names_place(organ, window):  # "the right lower lobe target nodule (7 mm), a 5 mm nodule in
                    # the left upper lobe": this one's place is written before it, from the size before
                    window = text[found[i - 1].end if i else max(lead.rfind(":"), lead.rfind("; ")) + 1: m.start]
            parts.append(member(window, m.diameters_mm, m.text))
        # "three nodules: two ..., each 3 to 4 mm, and one ... 7 mm": a size for each of several is more lesions
        if record["count_exact"] and record["count"] > len(parts) and EACH_WORD.search(text):
            parts.append({**record, "count": record["count"] - len(parts), "size": {"status": "not_reported"}})
        return parts
    largest = _LARGEST.search(text)
    if largest is None:
        return [record]
    m = found[0]
    # the largest one's words: to the end of its clause ("..., in the lower pole of the left kidney, and two
    # subcentimeter cysts are present in the right kidney" places it on the left)
    clause_end = _NEXT_CLAUSE.search(text, m.end)
    window = text[largest.start():clause_end.start() if clause_end else len(text)]
    largest_member = member(window, m.diameters_mm, m.text)
    if (largest_member["laterality"] == record["laterality"] and largest_member["segments"] == record["segments"]
            and record["size"]["status"] == "measured"):
        return [record]  # nothing more specific is written about the largest
    # "Three lesions ...; the largest, in segment 8, measures 1.9 cm": two more; "multiple ...": at least one more
    exact = record["count_exact"] and record["count"] > 1
    rest = {**record, "count": max(1, record["count"] - 1), "count_exact": exact, "size": {"status": "not_reported"}}
    if rest["laterality"] == "bilateral" and rest["count"] == 1 and exact:  # one lesion: on the other side
        rest["laterality"] = {"left": "right", "right": "left"}.get(largest_member["laterality"])
    return [largest_member, rest]
