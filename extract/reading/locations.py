"""Where in an organ a phrase puts a lesion: liver segments, organ parts, and the side."""

from __future__ import annotations

import re

from schemas.vocab import LIVER_LEFT_LOBE, LIVER_RIGHT_LOBE, Organ, SubSegment

_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8}


_SEGMENT = re.compile(
    # "segment 6, 4.1 cm": a size after the list is not a segment
    r"\bsegments?\s+((?:(?:[1-8]|viii|vii|vi|iv|v|iii|ii|i)[ab]?\b(?!\.\d|\s*(?:mm|cm)\b)"
    r"(?:\s*(?:,|/|-|and|or|to|&)\s*)?)+)",
    re.IGNORECASE,
)
_SEGMENT_TOKEN = re.compile(r"viii|vii|vi|iv|v|iii|ii|i|[1-8]", re.IGNORECASE)


def liver_segments_in_text(text: str) -> list[int]:
    """Couinaud segments named in a location phrase: 'segment 4A', 'segments VI and VII', 'segment 5/8',
    'segments 2-3', 'caudate lobe', 'right lobe' (→ 5-8), 'left lobe' (→ 2-4), 'hepatic dome' (→ 7, 8)."""
    t = text.lower()
    found: set[int] = set()
    for m in _SEGMENT.finditer(t):
        tokens = [_ROMAN.get(tok, None) or int(tok) for tok in _SEGMENT_TOKEN.findall(m.group(1).replace("a", " ").replace("b", " "))]
        span = m.group(1)
        if re.search(r"\d\s*(?:-|to)\s*\d", span) and len(tokens) == 2 and tokens[0] < tokens[1]:
            tokens = list(range(tokens[0], tokens[1] + 1))
        found.update(tokens)
    if "caudate" in t:
        found.add(1)
    if not found:
        if re.search(r"\bright (?:hepatic )?lobe\b", t):
            found.update(LIVER_RIGHT_LOBE)
        if re.search(r"\bleft (?:hepatic )?lobe\b", t):
            found.update(LIVER_LEFT_LOBE)
        if "left lateral" in t:
            found.update((2, 3))
        if "right posterior" in t:
            found.update((6, 7))
        if "right anterior" in t:
            found.update((5, 8))
        if "dome" in t:
            found.update((7, 8))
    return sorted(found)


_PANCREAS_PARTS = (
    ("uncinate", SubSegment.PANCREAS_UNCINATE),
    ("head", SubSegment.PANCREAS_HEAD),
    ("neck", SubSegment.PANCREAS_NECK),
    ("body", SubSegment.PANCREAS_BODY),
    ("tail", SubSegment.PANCREAS_TAIL),
)
_KIDNEY_PARTS = (
    (r"upper pole|superior pole", SubSegment.KIDNEY_UPPER_POLE),
    (r"interpolar|mid(?:dle)? ?(?:pole|portion|kidney)", SubSegment.KIDNEY_INTERPOLAR),
    (r"lower pole|inferior pole", SubSegment.KIDNEY_LOWER_POLE),
    (r"renal sinus|renal pelvis|hilum|hilar", SubSegment.KIDNEY_RENAL_SINUS),
)
_LUNG_PARTS = (
    (r"upper lobe|lingula|\b[rl]ul\b", SubSegment.LUNG_UPPER_LOBE),
    (r"middle lobe|\brml\b", SubSegment.LUNG_MIDDLE_LOBE),
    (r"lower lobe|lung base|\b[rl]ll\b", SubSegment.LUNG_LOWER_LOBE),
)


_SUBSEGMENT_ORDER = {s: i for i, s in enumerate(SubSegment)}


def subsegments_in_text(organ: Organ, text: str) -> list[SubSegment]:
    """Sub-segments of `organ` named in a location phrase, in vocabulary order (a union: the lesion lies
    somewhere inside them). Empty when the phrase names none."""
    t = text.lower()
    found: set[SubSegment] = set()
    if organ is Organ.LIVER:
        found = {SubSegment(f"liver_segment_{n}") for n in liver_segments_in_text(t)}
    elif organ is Organ.PANCREAS:
        found = {seg for word, seg in _PANCREAS_PARTS if re.search(rf"\b{word}\b", t)}
        if "head" in t and "uncinate" in t and re.search(r"head.{0,12}uncinate|uncinate.{0,12}head", t):
            found.add(SubSegment.PANCREAS_HEAD)
    elif organ is Organ.KIDNEY:
        found = {seg for pattern, seg in _KIDNEY_PARTS if re.search(pattern, t)}
    elif organ is Organ.LUNG:
        found = {seg for pattern, seg in _LUNG_PARTS if re.search(pattern, t)}
    return sorted(found, key=_SUBSEGMENT_ORDER.__getitem__)


#: "both" of paired places ("both lungs", "both lower lobes"), not of anything else ("both prior examinations").
_BOTH_SIDES = re.compile(r"\bboth\s+(?:[a-z-]+\s+)?(?:lungs?|kidneys?|adrenals?|glands|lobes|sides|hemithora\w+|"
                         r"ovaries|breasts|bases|apices|axillae|hila|upper|lower|renal|adrenal|pulmonary)\b")


def side_in_text(text: str) -> str | None:
    """`left`, `right` or `bilateral` as a phrase states it, else None. The lingula is part of the left lung."""
    t = text.lower()
    if re.search(r"\bbilateral(?:ly)?\b", t) or _BOTH_SIDES.search(t):
        return "bilateral"
    # RUL, RML, RLL, LUL, LLL: the lobe abbreviations of chest reports
    left = re.search(r"\bleft\b|\blingula(?:r)?\b|\bl[ul]l\b", t) is not None
    right = re.search(r"\bright\b|\br[uml]l\b", t) is not None
    if left and right:
        return "bilateral"
    return "left" if left else "right" if right else None
