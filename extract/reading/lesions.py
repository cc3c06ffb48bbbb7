"""One answer lesion as a record: the rules that drop it, and the side, size, count, certainty and attenuation
read from the quoted wording.

A small model copies the example answers, calls normal organs lesions and attaches a quote about one organ
to another. The rules below therefore trust the report text over the model: a lesion is kept only when its
quote is in the report, its sentence asserts a lesion word that no negation covers, and that sentence (or
its section header) does not speak of other organs only. Side, count, certainty and attenuation are read
from the quoted wording where it states them.
"""

from __future__ import annotations

import re
from typing import Any

from extract.reading.lesion_words import (
    attenuation_in_text,
    composition_in_text,
    group_word_in_text,
    lesion_word_in_text,
    stated_count,
)
from extract.reading.locations import side_in_text, subsegments_in_text
from extract.reading.measurements import current_measurements, is_prior_size, size_from_quote
from extract.reading.negation import item_assertion, negated_blanked
from extract.reading.organs import named_organs
from extract.reading.quotes import QuoteContext, canonical_quote, in_report, locate_quote
from extract.reading.sentences import is_not_findings_header
from schemas.llm import LLMLesion
from schemas.measure import parse_size_text
from schemas.vocab import PAIRED_ORGANS, TYPE_ORGANS, LesionType, Organ

#: Words that make a finding "not a lesion" when no lesion word is present (stones, collections, ...).
_NOT_LESION = re.compile(
    r"\b(?:stones?|calculus|calculi|cholelithiasis|nephrolithiasis|diverticul\w*|steatosis|fatty infiltration|"
    r"collections?|abscess|atelectasis|hydronephrosis|ductal dilatation|dilated duct|granuloma|scar(?:ring)?)\b",
    re.IGNORECASE,
)
_HEDGE_PROBABLE = re.compile(r"\b(?:likely|probabl[ey]|consistent with|compatible with|in keeping with|"
                             r"suggest\w*|highly suspicious)\b", re.IGNORECASE)
_HEDGE_POSSIBLE = re.compile(r"\b(?:suspicious for|concerning for|cannot be excluded|cannot exclude|"
                             r"possibl[ey]|questionable|may represent)\b", re.IGNORECASE)
_EACH = re.compile(r"\beach\b|\b(?:two|three|four|five|\d+)\s+(?:\d+(?:\.\d+)?\s*(?:mm|cm))", re.IGNORECASE)
_QUALIFIER_WORDS = {"subcentimeter": 10.0}
#: Key of a record dict holding its quote's (start, end) in the NFKC report while the conversion runs.
SPAN_KEY = "_span"
_MIXED = re.compile(r"\b(?:cystic and solid|solid and cystic|mixed cystic|complex cystic|partially cystic)\b",
                    re.IGNORECASE)


_STATION = r"(?:1[0-4]|[1-9])[RLrl]?"
# A list of nodal stations: after "station(s)", "at" or an opening parenthesis ("(4R, 10R)", "at 4R, 7 and 10L").
_STATION_LIST = re.compile(rf"(?:\bstations?\s+|\bat\s+|\()({_STATION}(?:\s*(?:,|\band\b|&|/)\s*{_STATION})*)\b",
                           re.IGNORECASE)
_SIZE_AFTER = re.compile(r"\s*(?:(?:,|and|&|/|-|to)\s*)?[\d.]*\s*(?:mm|cm)\b|\.\d", re.IGNORECASE)


def nodal_stations(text: str) -> set[str]:
    """The lymph node stations a phrase lists ("(4R, 10R) and subcarinal (7)": {4R, 10R, 7}); sizes and series or
    image numbers are not stations."""
    found: set[str] = set()
    for m in _STATION_LIST.finditer(text):
        if not _SIZE_AFTER.match(text, m.end(1)):  # "at 2 and 3 cm" are sizes
            found |= {t.upper() for t in re.findall(_STATION, m.group(1))}
    return found


def sentence_organs(header: str, sentence: str) -> set[Organ]:
    """Organs a sentence speaks of: named in its section header or in its wording outside negated and history
    stretches ("metastasis from renal cell carcinoma" names no kidney)."""
    return named_organs(f"{header} {negated_blanked(sentence)}")


def drop_reason(organ: Organ, header: str, sentence: str, quote: str = "", title: str = "") -> str | None:
    """Why a lesion of `organ` quoted from `sentence` under `header` (an item of the list `title`) is dropped, or
    None when it is kept: the section is history or technique, the sentence asserts no lesion of the organ, the
    quote (its matched report text) names a stone or collection and no lesion, or the sentence speaks of other
    organs only. Without a quote, what the sentence alone allows."""
    if is_not_findings_header(header):
        return "quote is in the history/technique section"
    if item_assertion(organ, sentence, title) == "none":
        return "its sentence asserts no lesion (negated, normal or not a lesion)"
    if _NOT_LESION.search(quote) and not lesion_word_in_text(organ, negated_blanked(quote)):
        return "not a lesion (stone/collection/...)"
    named = sentence_organs(header, sentence)
    if named and organ not in named:
        return f"its sentence is about {sorted(o.value for o in named)}"
    if organ is not Organ.LYMPH_NODE and named_organs(negated_blanked(sentence)) == {Organ.LYMPH_NODE}:
        return "its sentence is about a lymph node"  # "Breasts and axillae: ... a 2.4 cm axillary lymph node"
    return None


def _sized_one_by_one(organ: Organ, text: str) -> int:
    """How many lesions `text` sizes one by one: current measurements each followed closely by a lesion word
    of `organ` ("a 5 mm focus in the caudate lobe and a 2.1 cm cyst"); 0 when some measurement is not."""
    found = current_measurements(text)
    followed = [lesion_word_in_text(organ, negated_blanked(text[m.end:m.end + 30])) for m in found]
    return len(found) if found and all(followed) else 0


_CALLED_NORMAL = re.compile(r"\b(?:is|are|appears?|looks?)\s+(?:otherwise\s+)?(?:normal|unremarkable)\b",
                            re.IGNORECASE)
_SIDE_CLAUSE_BREAK = re.compile(r"[,;]|\b(?:while|whereas|but)\b", re.IGNORECASE)


def _without_normal_clauses(organ: Organ, text: str) -> str:
    """`text` less the clauses that call a side normal ("..., while the right adrenal gland is normal")."""
    if not _CALLED_NORMAL.search(text):
        return text
    parts = _SIDE_CLAUSE_BREAK.split(text)
    return " ".join(c for c in parts if not (_CALLED_NORMAL.search(c) and not lesion_word_in_text(organ, c)))


def _lesion_side(lesion: LLMLesion, ctx: QuoteContext) -> str | None:
    """Side of a paired-organ lesion: the quote's words, else the location's, the header's, the sentence's,
    else the model's left/right. `bilateral` needs the words ("bilateral", "both", left and right)."""
    for text in (ctx.text, lesion.location, ctx.header, ctx.sentence):
        side = side_in_text(_without_normal_clauses(Organ(lesion.organ), text))
        if side is not None:
            return side
    return lesion.side if lesion.side in ("left", "right") else None


def _attenuation_and_composition(ctx: QuoteContext, kind: LesionType) -> tuple[str, str]:
    """Attenuation and composition as written: the quote first, then its sentence. Nothing written: unknown
    (the model's guess is not used); a cyst is cystic."""
    attenuation, composition = "unknown", "unknown"
    for text in (ctx.text, ctx.sentence):
        found = attenuation_in_text(text)
        stated = "mixed" if _MIXED.search(text) else composition_in_text(text)
        if found or stated:
            attenuation, composition = found or "unknown", stated or "unknown"
            break
    if kind in (LesionType.CYST, LesionType.PSEUDOCYST) and composition not in ("cystic", "mixed"):
        composition = "cystic"
    return attenuation, composition


def lesion_record(lesion: LLMLesion, record_id: int, report_text: str, report_key: str,
                  warnings: list[str]) -> tuple[dict, QuoteContext] | None:
    """The record (a `TumorRecord` as a dict) for one answer lesion and where its quote sits, or None when
    the quote is not in the report or `drop_reason` drops it; what was dropped or ignored goes to `warnings`.

    Args:
        report_key: `match_key(report_text)`.
    """
    organ = Organ(lesion.organ)
    quote = canonical_quote(lesion.quote)
    where = f"lesion {record_id} ({organ.value})"
    ctx = locate_quote(quote, report_text)
    if ctx is None:
        warnings.append(f"{where}: quote is not in the report; dropped")
        return None
    reason = drop_reason(organ, ctx.header, ctx.sentence, ctx.text, ctx.title)
    if reason is not None:
        warnings.append(f"{where}: {reason}; dropped")
        return None
    assertion = item_assertion(organ, ctx.sentence, ctx.title)
    context = f"{lesion.location} {ctx.text}"

    side = _lesion_side(lesion, ctx) if organ in PAIRED_ORGANS else None
    count, count_exact = lesion.count, lesion.count_exact
    if not group_word_in_text(f"{ctx.text} {ctx.sentence}"):
        count, count_exact = 1, True  # nothing in the wording speaks of more than one lesion
    elif (stated := stated_count(negated_blanked(ctx.text))) is not None:
        count, count_exact = stated  # "five nodules are tracked", "at least five": the words, whatever the answer said
    elif organ is Organ.LYMPH_NODE and len(stations := nodal_stations(ctx.text)) >= 2:
        count, count_exact = len(stations), True  # "enlarged nodes at stations 4R, 7 and 10L": one per station
    elif count < 2 and (not count_exact or group_word_in_text(negated_blanked(ctx.text))):
        count, count_exact = 2, False  # "multiple" without a number: at least two
    if count == 1 and count_exact:
        count = max(1, _sized_one_by_one(organ, ctx.text))  # "a 5 mm focus ... and a 2.1 cm cyst": two lesions
    if side == "bilateral" and count == 1 and count_exact:
        count, count_exact = 2, False

    size: dict[str, Any] = {"status": "not_reported"}
    size_text = canonical_quote(lesion.size)
    diameters = parse_size_text(size_text) if size_text else None
    if diameters is not None and not in_report(size_text, report_key):
        warnings.append(f"{where}: size {size_text!r} is not in the report; ignored")
        diameters = None
    prior = diameters is not None and is_prior_size(size_text, ctx.sentence)
    if prior:
        warnings.append(f"{where}: size {size_text!r} is a prior size in the report; ignored")
        diameters = None
    if diameters is None and (not size_text or prior):
        found = size_from_quote(organ, ctx.text)
        if found is not None:
            diameters, size_text = list(found.diameters_mm), found.text
    if diameters is not None:
        group = count > 1 or not count_exact
        refers_to = "lesion" if not group else ("each_of_group" if _EACH.search(quote) else "largest_of_group")
        size = {"status": "measured", "diameters_mm": diameters, "reported_text": size_text, "refers_to": refers_to}
    elif lesion.size_bound == "subcentimeter" or re.search(r"\bsub-?centimeter\b", ctx.text, re.IGNORECASE):
        size = {"status": "bounded", "upper_bound_mm": _QUALIFIER_WORDS["subcentimeter"], "qualifier": "subcentimeter"}
    elif lesion.size_bound != "none":
        size = {"status": "qualitative", "qualifier": lesion.size_bound}

    kind = LesionType(lesion.kind)
    allowed = TYPE_ORGANS.get(kind)
    if allowed is not None and organ not in allowed:
        warnings.append(f"{where}: kind {kind.value} does not fit the organ; set to lesion_unspecified")
        kind = LesionType.LESION_UNSPECIFIED
    if kind in (LesionType.LESION_UNSPECIFIED, LesionType.NODULE):
        type_certainty = "not_stated"
    elif _HEDGE_POSSIBLE.search(ctx.sentence):
        type_certainty = "possible"
    elif _HEDGE_PROBABLE.search(ctx.sentence):
        type_certainty = "probable"
    else:
        type_certainty = "stated"
    # Doubt about existence is read from the wording; a model's "possible" without such wording is not kept.
    presence = "possible" if assertion == "possible" else (
        "definite" if lesion.certainty == "possible" else lesion.certainty)
    attenuation, composition = _attenuation_and_composition(ctx, kind)
    record = {
        "id": record_id,
        "organ": organ.value,
        "laterality": side,
        # a list line's label ("Right upper lobe, posterior segment: 11 x 9 mm nodule") is its header
        "segments": [s.value for s in subsegments_in_text(organ, context) or subsegments_in_text(organ, ctx.header)],
        "location_text": lesion.location or None,
        "lesion_type": kind.value,
        "type_certainty": type_certainty,
        "presence": presence,
        "attenuation": attenuation,
        "composition": composition,
        "size": size,
        "count": count,
        "count_exact": count_exact,
        "innumerable": bool(re.search(r"\binnumerable|too numerous to count\b", ctx.sentence, re.IGNORECASE))
        and not count_exact,
        "evidence": [ctx.text[:400]] if len(ctx.text) >= 3 else [],
        SPAN_KEY: ctx.span,  # where the words are, for the conversion's later passes; not part of the record
    }
    return record, ctx
