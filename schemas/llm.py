"""The compact schema the LLM fills, and the deterministic conversion into a validated `ExtractionPayload`.

The model decides per organ (an explicit state, so "normal" and "not mentioned" differ) and lists lesions with
words quoted from the report; code then parses sizes and units, maps location words to sub-segments, fills
attenuation from the wording and drops findings that are not lesions. The JSON schema stays xgrammar-friendly:
enums, bounded strings and arrays, no `allOf` / `uniqueItems` / `multipleOf`.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from extract.reading.lesion_words import attenuation_in_text, composition_in_text, group_word_in_text, lesion_word_in_text
from extract.reading.locations import side_in_text, subsegments_in_text
from extract.reading.organs import named_organs, organs_named_by_word
from extract.reading.patterns import words_alternation
from schemas.measure import find_measurements, parse_size_text
from schemas.records import ExtractionPayload, _match_key
from schemas.vocab import (
    NEGATION_CUES,
    NOT_CURRENT_CUES,
    NOT_FINDINGS_HEADERS,
    PAIRED_ORGANS,
    POST_NEGATION_CUES,
    PRESENCE_HEDGES,
    TYPE_ORGANS,
    LesionType,
    Organ,
)

OrganKey = Literal[tuple(o.value for o in Organ)]  # type: ignore[valid-type]
KindKey = Literal[tuple(t.value for t in LesionType)]  # type: ignore[valid-type]

# Bounds keep the longest answer the grammar allows (a small model repeating entries until the arrays are full)
# under 2,048 output tokens of the Qwen2.5 tokenizer, so such an answer still ends as valid JSON.
MAX_LESIONS = 10
MAX_ORGANS = 12
#: Output tokens that always hold a complete answer (tests/schemas/test_llm.py measures the worst case).
ANSWER_TOKEN_BUDGET = 2048


class _LLMModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Field order is the order a constrained decoder writes: the quote comes right after the organ, so every
# later field is decided with the copied report words already in context.
class LLMOrgan(_LLMModel):
    organ: OrganKey
    quote: str = Field(max_length=64)
    side: Literal["left", "right", "both"]
    state: Literal["lesion", "equivocal", "no_lesion", "resected"]


class LLMLesion(_LLMModel):
    organ: OrganKey
    quote: str = Field(max_length=100)
    side: Literal["left", "right", "both", "none"]
    location: str = Field(max_length=32, description="location words as written, or empty")
    size: str = Field(max_length=24, description="the current measurement exactly as written, or empty")
    size_bound: Literal["none", "subcentimeter", "tiny", "small", "large", "massive"]
    count: int = Field(ge=1, le=99)
    count_exact: bool
    attenuation: Literal["hypo", "iso", "hyper", "heterogeneous", "unknown"]
    kind: KindKey
    certainty: Literal["definite", "probable", "possible"]


class LLMAnswer(_LLMModel):
    organs: list[LLMOrgan] = Field(max_length=MAX_ORGANS)
    lesions: list[LLMLesion] = Field(max_length=MAX_LESIONS)


def parse_llm_answer(text: str) -> LLMAnswer:
    """An answer text as an `LLMAnswer`.

    JSON forbids raw control characters inside strings, but llama.cpp's schema grammar lets a model copy a line
    break of the report into a quote. Such an answer is read with Python's non-strict decoder, which keeps the
    character as it is; everything else about the schema is still checked.

    Raises:
        pydantic.ValidationError: not JSON, or not an `LLMAnswer`.
    """
    from pydantic import ValidationError

    try:
        return LLMAnswer.model_validate_json(text)
    except ValidationError as exc:
        if not any(e["type"] == "json_invalid" and "control character" in e["msg"] for e in exc.errors()):
            raise
        try:
            data = json.loads(text, strict=False)
        except ValueError:
            raise exc from None
    return LLMAnswer.model_validate(data)


def llm_json_schema() -> dict[str, Any]:
    """JSON schema for constrained decoding (vLLM `json_schema`, llama.cpp `json_object` + schema)."""
    return LLMAnswer.model_json_schema()


# --- deterministic conversion ------------------------------------------------------------------------
#
# A small model copies the example answers, calls normal organs lesions and attaches a quote about one organ
# to another. The rules below therefore trust the report text over the model: a lesion is kept only when its
# quote is in the report, its sentence asserts a lesion word that no negation covers, and that sentence (or
# its section header) does not speak of other organs only. Side, count, certainty and attenuation are read
# from the quoted wording where it states them.

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


def _cue_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\b" + words_alternation(words), re.IGNORECASE)


# "not" is a negation except in hedges ("is not excluded"), which keep the lesion possible.
_PRE_NEGATION = re.compile(
    r"\b(?:" + words_alternation(w for w in NEGATION_CUES if w != "not")
    + r"|not(?!\s+(?:be\s+)?(?:excluded|ruled out))\b)", re.IGNORECASE)
_POST_NEGATION = _cue_pattern(POST_NEGATION_CUES)
# "known", "from" and "metastatic" mark history or origin only before a disease word ("known colon cancer",
# "metastasis from renal cell carcinoma", "metastatic renal cell carcinoma"), not in "the known 2 cm lesion".
_NOT_CURRENT = re.compile(
    r"\b(?:" + "|".join(re.escape(w) for w in NOT_CURRENT_CUES if w not in ("known", "from"))
    + r"|(?:known|from)(?=(?:\s+[\w-]+){0,2}?\s+(?:cancer|carcinoma|malignancy|lymphoma|disease|primary)\b)"
    + r"|metastatic(?=(?:\s+[\w-]+){0,2}?\s+(?:cancer|carcinoma)\b))\b",
    re.IGNORECASE)
_NOT_FINDINGS_HEADER = re.compile(r"^(?:" + "|".join(re.escape(w) for w in NOT_FINDINGS_HEADERS) + r")\b",
                                  re.IGNORECASE)
_PRESENCE_HEDGE = _cue_pattern(PRESENCE_HEDGES)
_NEGATION_END = re.compile(r"[;.]|\b(?:but|however|except|other than|whereas)\b", re.IGNORECASE)
_CLAUSE_BREAK = re.compile(r"[,;:]|\b(?:but|however|whereas)\b", re.IGNORECASE)
# A sentence ends at ; ! ? a line break, or a period that is not a decimal point ("2.3 cm").
_SENTENCE_BREAK = re.compile(r"[;!?\n]|\.(?!\d)")
# A section header opens a line or follows a sentence end: "Right kidney: ...", "... normal. Spleen: ...".
_HEADER = re.compile(r"(?:^|[.;]\s+)\s*([A-Za-z][A-Za-z /&,()-]{0,40}):")
_MIXED = re.compile(r"\b(?:cystic and solid|solid and cystic|mixed cystic|complex cystic|partially cystic)\b",
                    re.IGNORECASE)


def _canonical_quote(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


def _in_report(quote: str, report_key: str) -> bool:
    return bool(quote) and _match_key(quote) in report_key


@dataclass(frozen=True)
class QuoteContext:
    """Where a quote sits in the report.

    Attributes:
        span: (start, end) character offsets of the matched text in the NFKC-normalised report.
        text: the matched report text (the quote, or its longest part found in the report).
        sentence: the sentence (up to `;`, `.`, line break) holding the match.
        header: the section header of its line ("Right kidney"), or "".
    """

    span: tuple[int, int]
    text: str
    sentence: str
    header: str


_WHITESPACE_RUN = re.compile(r"\s+")


def _normalised_with_index(text: str) -> tuple[str, list[int]]:
    """Casefolded text with whitespace runs collapsed, and the source offset of every kept character."""
    if text.isascii():
        # ASCII casefolds one character to one, so only whitespace runs move offsets: each becomes one " " at
        # the offset of its first character (`\s` and `str.isspace` agree on every character).
        parts: list[str] = []
        offsets: list[int] = []
        pos = 0
        for m in _WHITESPACE_RUN.finditer(text):
            parts.append(text[pos:m.start()].lower())
            parts.append(" ")
            offsets.extend(range(pos, m.start() + 1))
            pos = m.end()
        parts.append(text[pos:].lower())
        offsets.extend(range(pos, len(text)))
        return "".join(parts), offsets
    return _normalised_chars(text)


def _normalised_chars(text: str) -> tuple[str, list[int]]:
    """`_normalised_with_index` for any text, character by character."""
    chars: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        if ch.isspace():
            if chars and chars[-1] == " ":
                continue
            ch = " "
        for folded in ch.casefold():
            chars.append(folded)
            index.append(i)
    return "".join(chars), index


def _quote_fragments(quote: str) -> list[str]:
    """The quote, the quote without its last word, then its parts between punctuation (3+ words), longest
    first."""
    parts = [p.strip() for p in re.split(r"[,;:()]|\.(?!\d)", quote)]
    parts = [p for p in parts if len(p.split()) >= 3 and p != quote]
    # A quote cut at the schema's length bound ends in a partial word.
    cut = quote.strip(" .,;:").rsplit(" ", 1)[0]
    return [quote.strip(" .,;:"), cut, *sorted(parts, key=len, reverse=True)]


@dataclass(frozen=True)
class _ReportText:
    """What every quote lookup in one report needs, computed once per report (`_report_text`).

    Attributes:
        text: the NFKC-normalised report.
        norm: `text` casefolded with whitespace runs collapsed (`_normalised_with_index`).
        index: the offset in `text` of every character of `norm`.
        break_starts / break_ends: start and end offsets of the sentence breaks of `text`, ascending.
    """

    text: str
    norm: str
    index: list[int]
    break_starts: list[int]
    break_ends: list[int]


@functools.lru_cache(maxsize=8)  # one conversion reads one report; a few recent ones are kept
def _report_text(report: str) -> _ReportText:
    text = unicodedata.normalize("NFKC", report)
    norm, index = _normalised_with_index(text)
    breaks = list(_SENTENCE_BREAK.finditer(text))
    return _ReportText(text, norm, index, [m.start() for m in breaks], [m.end() for m in breaks])


def locate_quote(quote: str, report: str) -> QuoteContext | None:
    """Find `quote` in `report` (case and whitespace insensitive; failing that, its longest part of three or
    more words) with its sentence and section header. None when no part of it is in the report."""
    indexed = _report_text(report)
    report, norm, index = indexed.text, indexed.norm, indexed.index
    for fragment in _quote_fragments(unicodedata.normalize("NFKC", quote)):
        key = _match_key(fragment)
        if len(key) < 3:
            continue
        pos = norm.find(key)
        if pos < 0:
            continue
        start, end = index[pos], index[pos + len(key) - 1] + 1
        # The last break ending at or before the match, the first one starting at or after its last character.
        before = bisect_right(indexed.break_ends, start)
        sent_start = indexed.break_ends[before - 1] if before else 0
        after = bisect_left(indexed.break_starts, max(start, end - 1))
        sent_end = indexed.break_starts[after] if after < len(indexed.break_starts) else len(report)
        line_start = report.rfind("\n", 0, start) + 1
        headers = list(_HEADER.finditer(report[line_start:start]))
        header_text = headers[-1].group(1).strip() if headers else ""
        if not header_text and line_start > 0:
            previous = report[: line_start - 1].rsplit("\n", 1)[-1].strip()
            if previous.endswith(":") and len(previous) <= 42:
                header_text = previous[:-1]
        return QuoteContext((start, end), report[start:end], report[sent_start:sent_end].strip(), header_text)
    return None


# Cached: one report asks about the same sentence several times, and templated sentences recur across reports.
@functools.lru_cache(maxsize=4096)
def _negated_blanked(text: str) -> str:
    """`text` with negated stretches blanked: from a negation cue to the clause end ("no focal lesion"), and
    the clause before a closing cue ("the segment 8 lesion has resolved")."""
    chars = list(text)
    for m in [*_PRE_NEGATION.finditer(text), *_NOT_CURRENT.finditer(text)]:
        stop = _NEGATION_END.search(text, m.end())
        end = stop.start() if stop else len(text)
        chars[m.start():end] = " " * max(0, end - m.start())
    for m in _POST_NEGATION.finditer(text):
        begin = max((b.end() for b in _CLAUSE_BREAK.finditer(text, 0, m.start())), default=0)
        chars[begin:m.end()] = " " * max(0, m.end() - begin)
    return "".join(chars)


def _clauses(text: str) -> list[tuple[int, int]]:
    bounds = [0, *(m.start() for m in _CLAUSE_BREAK.finditer(text)), len(text)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


@functools.lru_cache(maxsize=4096)
def lesion_assertion(organ: Organ, sentence: str) -> str:
    """How a sentence speaks of a lesion of `organ`: `definite` (an unnegated lesion word in a clause without
    doubt), `possible` (lesion words only in clauses that doubt it: "a neoplasm cannot be excluded") or `none`
    (no lesion word outside negations: "no focal lesion", "the lesion has resolved", "kidneys: normal")."""
    blanked = _negated_blanked(sentence)
    asserted = [(a, b) for a, b in _clauses(sentence) if lesion_word_in_text(organ, blanked[a:b])]
    if not asserted:
        return "none"
    if all(_PRESENCE_HEDGE.search(sentence[a:b]) for a, b in asserted):
        return "possible"
    return "definite"


_PRIOR_WORDS = re.compile(r"\b(?:previous(?:ly)?|prior|was|were|from|compared|baseline|earlier|before|then)\b",
                          re.IGNORECASE)


def _is_prior_size(size_text: str, sentence: str) -> bool:
    """Whether every place `sentence` writes `size_text` follows "previously", "prior", "was", "from" ..."""
    spots = [m.start() for m in re.finditer(re.escape(size_text), sentence, re.IGNORECASE)]
    return bool(spots) and all(_PRIOR_WORDS.search(sentence[max(0, i - 25): i]) for i in spots)


def _size_from_quote(text: str) -> list[float] | None:
    """The one current measurement a quote holds when the model left `size` empty; None when it holds none or
    several. Sizes right after "previously", "prior", "was", "from" are earlier studies' and never count."""
    found = _current_measurements(text)
    return list(found[0].diameters_mm) if len(found) == 1 else None


_IMPRESSION = re.compile(r"\b(?:IMPRESSION|CONCLUSIONS?|SUMMARY)\b|\b(?:Impression|Conclusions?)\s*:")


def _in_impression(report: str, position: int) -> bool:
    """Whether `position` of the (NFKC) report lies in its impression / conclusion section."""
    return bool(_IMPRESSION.search(_report_text(report).text[:position]))


def _repeats_findings(record: dict, earlier: list[dict]) -> bool:
    same = [t for t in earlier if t["organ"] == record["organ"]
            and (t["laterality"] == record["laterality"] or None in (t["laterality"], record["laterality"]))]
    if not same:
        return False
    size = record["size"].get("diameters_mm")
    return size is None or any(t["size"].get("diameters_mm") == size for t in same)


def _current_measurements(text: str) -> list:
    """Measurements in `text` that are not prior sizes (no "previously"/"prior"/... just before them)."""
    return [m for m in find_measurements(text) if not _PRIOR_WORDS.search(text[max(0, m.start - 25): m.start])]


_LARGEST = re.compile(r"\b(?:(?:the\s+)?(?:largest|dominant|biggest)|up to)\b", re.IGNORECASE)
# A sentence that only sizes the largest member of the group before it ("The largest measures 4.5 cm.").
_LARGEST_FOLLOW_UP = re.compile(r"^(?:the\s+)?(?:largest|dominant|biggest)\b", re.IGNORECASE)


def split_by_measurement(record: dict, text: str) -> list[dict]:
    """A group record whose words size its members one by one ("1.1 cm in segment 2 and 3.4 cm in segment 7",
    "right 1.4 cm and left 2.6 cm") becomes one record per current measurement, each with the side and
    sub-segments written next to it. A group whose one measurement is its largest member's ("the largest
    1.8 cm in the right lower lobe") becomes that member plus the rest (count >= 2, lower bound, unsized).
    Anything else is returned unchanged."""
    group = record["count"] > 1 or not record["count_exact"]
    found = _current_measurements(text)
    organ = Organ(record["organ"])
    if not group or not found:
        return [record]
    def member(window: str, diameters: tuple[float, ...], reported: str) -> dict:
        side = side_in_text(window) if organ in PAIRED_ORGANS else None
        segments = [s.value for s in subsegments_in_text(organ, window)]
        return {**record, "count": 1, "count_exact": True, "innumerable": False,
                "laterality": side if side in ("left", "right") else
                (record["laterality"] if record["laterality"] != "bilateral" else None),
                "segments": segments or record["segments"],
                "size": {"status": "measured", "diameters_mm": list(diameters), "reported_text": reported,
                         "refers_to": "lesion"}}
    if len(found) >= 2:
        parts = []
        for i, m in enumerate(found):
            before = text[max(0, m.start - 12): m.start]
            after = text[m.end: found[i + 1].start if i + 1 < len(found) else len(text)]
            parts.append(member(before.split(",")[-1] + " " + after, m.diameters_mm, m.text))
        return parts
    largest = _LARGEST.search(text)
    if largest is None:
        return [record]
    m = found[0]
    window = text[largest.start():]
    largest_member = member(window, m.diameters_mm, m.text)
    if (largest_member["laterality"] == record["laterality"] and largest_member["segments"] == record["segments"]
            and record["size"]["status"] == "measured"):
        return [record]  # nothing more specific is written about the largest
    rest = {**record, "count": max(2, record["count"] - 1), "count_exact": False, "size": {"status": "not_reported"}}
    return [largest_member, rest]


def _lesion_side(lesion: LLMLesion, ctx: QuoteContext) -> str | None:
    """Side of a paired-organ lesion: the quote's words, else the location's, the header's, the sentence's,
    else the model's left/right. `bilateral` needs the words ("bilateral", "both", left and right)."""
    for text in (ctx.text, lesion.location, ctx.header, ctx.sentence):
        side = side_in_text(text)
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


def _lesion_record(lesion: LLMLesion, record_id: int, report_text: str, report_key: str,
                   warnings: list[str]) -> tuple[dict, QuoteContext] | None:
    organ = Organ(lesion.organ)
    quote = _canonical_quote(lesion.quote)
    where = f"lesion {record_id} ({organ.value})"
    ctx = locate_quote(quote, report_text)
    if ctx is None:
        warnings.append(f"{where}: quote is not in the report; dropped")
        return None
    if _NOT_FINDINGS_HEADER.match(ctx.header):
        warnings.append(f"{where}: quote is in the history/technique section; dropped")
        return None
    assertion = lesion_assertion(organ, ctx.sentence)
    if assertion == "none":
        warnings.append(f"{where}: its sentence asserts no lesion (negated, normal or not a lesion); dropped")
        return None
    if _NOT_LESION.search(ctx.text) and not lesion_word_in_text(organ, _negated_blanked(ctx.text)):
        warnings.append(f"{where}: not a lesion (stone/collection/...); dropped")
        return None
    # Organs named only in negated or history wording ("metastasis from renal cell carcinoma") do not count.
    named = named_organs(f"{ctx.header} {_negated_blanked(ctx.sentence)}")
    if named and organ not in named:
        warnings.append(f"{where}: its sentence is about {sorted(o.value for o in named)}; dropped")
        return None
    context = f"{lesion.location} {ctx.text}"

    side = _lesion_side(lesion, ctx) if organ in PAIRED_ORGANS else None
    count, count_exact = lesion.count, lesion.count_exact
    if not group_word_in_text(f"{ctx.text} {ctx.sentence}"):
        count, count_exact = 1, True  # nothing in the wording speaks of more than one lesion
    elif not count_exact and count < 2:
        count = 2  # "multiple" without a number: at least two
    if side == "bilateral" and count == 1 and count_exact:
        count, count_exact = 2, False

    size: dict[str, Any] = {"status": "not_reported"}
    size_text = _canonical_quote(lesion.size)
    diameters = parse_size_text(size_text) if size_text else None
    if diameters is not None and not _in_report(size_text, report_key):
        warnings.append(f"{where}: size {size_text!r} is not in the report; ignored")
        diameters = None
    prior = diameters is not None and _is_prior_size(size_text, ctx.sentence)
    if prior:
        warnings.append(f"{where}: size {size_text!r} is a prior size in the report; ignored")
        diameters = None
    if diameters is None and (not size_text or prior) and count == 1 and count_exact:
        diameters = _size_from_quote(ctx.text)
        if diameters is not None:
            size_text = _current_measurements(ctx.text)[0].text
            warnings.append(f"{where}: size read from the quote")
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
        "segments": [s.value for s in subsegments_in_text(organ, context)],
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
    }
    return record, ctx


# Wording that clears an organ: "unremarkable", "normal", "clear", "no focal lesion", "no lymphadenopathy".
_NORMAL = re.compile(
    r"\b(?:unremarkable|normal(?! in size| size| caliber| calibre)|clear|within normal limits|"
    r"no(?:\s+\S+){0,3}?\s+(?:lesions?|mass(?:es)?|nodules?|lymphadenopathy|adenopathy|metastas[ie]s|"
    r"abnormalit(?:y|ies)|tumou?rs?)|without(?:\s+\S+){0,3}?\s+(?:lesions?|mass(?:es)?|nodules?))\b",
    re.IGNORECASE)


def _sentences(report: str) -> list[tuple[str, str]]:
    """(section header, sentence) for every sentence of the report."""
    return list(_report_sentences(report))


@functools.lru_cache(maxsize=16)  # read twice per conversion (cleared organs, missed lesions)
def _report_sentences(report: str) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    header = ""
    for line in report.splitlines():
        stripped = line.strip()
        if stripped.endswith(":") and len(stripped) <= 42:
            header = stripped[:-1]
            continue
        line_header = header
        for part in _SENTENCE_BREAK.split(line):
            m = _HEADER.match(part)
            if m:
                line_header = m.group(1).strip()
            if part.strip():
                out.append((line_header, part.strip()))
    return tuple(out)


_VOCABULARY_RANK = {organ: rank for rank, organ in enumerate(Organ)}


def normal_organs(report: str) -> dict[Organ, str]:
    """Organs a sentence of the report clears ("The liver, spleen and kidneys are unremarkable.",
    "Spleen: Normal.", "No lymphadenopathy."), with that sentence. Organs named in the sentence count; when it
    names none, its section header's. A sentence that asserts a lesion of the organ clears nothing."""
    cleared: dict[Organ, str] = {}
    for header, sentence in _sentences(report):
        if not _NORMAL.search(sentence):
            continue
        organs = organs_named_by_word(sentence)
        if not organs and header:
            organs = organs_named_by_word(header)
        for organ in sorted(organs, key=_VOCABULARY_RANK.__getitem__):  # a set's order varies with PYTHONHASHSEED
            if lesion_assertion(organ, sentence) == "none":
                cleared.setdefault(organ, sentence)
    return cleared


def _organ_statuses(answer: LLMAnswer, tumors: list[dict], report_text: str, report_key: str,
                    warnings: list[str]) -> list[dict]:
    statuses: dict[tuple[str, str | None], dict] = {}
    for stated in answer.organs:
        organ = Organ(stated.organ)
        side = stated.side if organ in PAIRED_ORGANS and stated.side != "both" else None
        key = (organ.value, side)
        if key in statuses:
            continue
        ctx = locate_quote(stated.quote, report_text)
        named = named_organs(f"{ctx.header} {ctx.sentence}") if ctx else set()
        if ctx is None or organ not in named:
            warnings.append(f"organ {organ.value}: quote not in the report or not about this organ; ignored")
            continue
        quote = _canonical_quote(stated.quote)
        status: dict[str, Any] = {"organ": organ.value, "laterality": side,
                                  "evidence": [quote] if _in_report(quote, report_key) and len(quote) >= 3 else []}
        if stated.state == "resected":
            status.update(state="no_lesion", surgical_state="absent")
        else:
            status["state"] = {"lesion": "lesion_present"}.get(stated.state, stated.state)
        statuses[key] = status

    # The lesion list is authoritative: organ states are reconciled with it, not the other way round.
    for key, status in list(statuses.items()):
        organ, side = key
        mine = [t for t in tumors if t["organ"] == organ and (side is None or t["laterality"] in (side, "bilateral"))]
        if mine:
            definite = any(t["presence"] != "possible" for t in mine)
            if status.get("surgical_state") == "absent":
                status["surgical_state"] = "not_stated"
            status["state"] = "lesion_present" if definite else "equivocal"
        elif status["state"] in ("lesion_present", "equivocal"):
            warnings.append(f"organ {organ}: called {status['state']} without a lesion record; not_mentioned")
            status["state"] = "not_mentioned"
        status["lesion_count"] = None

    # Organs the report clears in so many words but the model left out.
    said = {organ for (organ, _), st in statuses.items() if st["state"] != "not_mentioned"} | {t["organ"] for t in tumors}
    for organ, sentence in normal_organs(report_text).items():
        if organ.value not in said:
            statuses.pop((organ.value, None), None)
            statuses[(organ.value, None)] = {"organ": organ.value, "laterality": None, "state": "no_lesion",
                                             "lesion_count": None, "evidence": [sentence[:400]]}
    return list(statuses.values())


def _lesion_sentences(report_text: str, report_key: str):
    """(header, text, organ) for every findings sentence, or clause, about exactly one organ: a sentence naming
    several organs is read clause by clause ("1.3 cm splenic lesion and 9 mm left adrenal nodule"); one naming
    none takes the organ of the sentence it continues after a semicolon, else its section header's."""
    previous: set[Organ] = set()
    previous_text = ""
    sentences: list[tuple[str, str]] = []
    for header, sentence in _sentences(report_text):
        if sentences and _LARGEST_FOLLOW_UP.match(sentence):
            sentences[-1] = (sentences[-1][0], f"{sentences[-1][1]}. {sentence}")
        else:
            sentences.append((header, sentence))
    for header, sentence in sentences:
        if _NOT_FINDINGS_HEADER.match(header):
            previous, previous_text = set(), sentence
            continue
        organs = named_organs(_negated_blanked(sentence))
        if not organs and previous and _match_key(f"{previous_text}; {sentence}") in report_key:
            organs = previous
        organs = organs or named_organs(header)
        previous, previous_text = organs, sentence
        if len(organs) == 1:
            yield header, sentence, next(iter(organs))
            continue
        for clause in re.split(r",|\band\b", sentence):
            named = named_organs(_negated_blanked(clause))
            if len(named) == 1 and len(clause.strip()) >= 3:
                yield header, clause.strip(), next(iter(named))


def _missed_lesions(report_text: str, report_key: str, tumors: list[dict]) -> list[dict]:
    """Records for findings sentences that assert a lesion of exactly one organ (side) no record covers.

    A small model often skips a lesion it was shown; the sentence passes the same checks as a quoted lesion
    (not history, not negated, organ named), so it stands for one lesion, or a group when it says so.
    """
    added: list[dict] = []
    for header, sentence, organ in _lesion_sentences(report_text, report_key):
        if lesion_assertion(organ, sentence) == "none":
            continue
        side = (side_in_text(sentence) or side_in_text(header)) if organ in PAIRED_ORGANS else None
        known = [t for t in [*tumors, *added] if t["organ"] == organ.value]
        sizes = [m.diameters_mm for m in _current_measurements(sentence)]
        covered = any(side is None or t["laterality"] in (side, "bilateral", None) or side == "bilateral"
                      for t in known)
        if covered and (not sizes or any(tuple(t["size"].get("diameters_mm", ())) in sizes for t in known)):
            continue  # nothing new: the organ (side) holds a record, and no new current size is written
        key = _match_key(sentence)
        if any(e and _match_key(e) in key for t in known for e in t["evidence"]):
            continue  # the answer quoted this sentence: its reading (sizes included) stands
        group = group_word_in_text(sentence)
        stand_in = LLMLesion.model_construct(
            organ=organ.value, quote=sentence, side="none" if side in (None, "bilateral") else side, location="",
            size="", size_bound="none", count=2 if group else 1, count_exact=not group, attenuation="unknown",
            kind="lesion_unspecified", certainty="definite")
        kept = _lesion_record(stand_in, len(tumors) + len(added) + 1, report_text, report_key, [])
        if kept is None:
            continue
        record, ctx = kept
        if _in_impression(report_text, ctx.span[0]) and known:
            continue
        for part in split_by_measurement(record, ctx.text):
            part["id"] = len(tumors) + len(added) + 1
            added.append(part)
    return added


def _keep_lesion(record: dict, ctx: QuoteContext, report_text: str, tumors: list[dict], seen: set[tuple],
                 spans: dict[tuple[str, tuple[int, int]], bool], warnings: list[str]) -> None:
    """Append `record` to `tumors` unless it repeats one already there."""
    # The same lesion repeated (findings + impression) collapses into one record.
    identity = (record["organ"], record["laterality"], tuple(record["size"].get("diameters_mm", ())),
                tuple(record["segments"]))
    if identity in seen and record["size"]["status"] == "measured":
        warnings.append(f"lesion {record['id']}: duplicate of an earlier record; dropped")
        return
    # A second entry on the very same words is a copy unless the words speak of several lesions.
    span_key = (record["organ"], ctx.span)
    if span_key in spans and not spans[span_key]:
        warnings.append(f"lesion {record['id']}: same quote as an earlier single lesion; dropped")
        return
    # The impression repeats findings: an entry there on an organ (side) the findings already hold is the
    # same lesion unless it carries a size no earlier record has.
    if _in_impression(report_text, ctx.span[0]) and _repeats_findings(record, tumors):
        warnings.append(f"lesion {record['id']}: impression repeats an earlier record; dropped")
        return
    spans[span_key] = group_word_in_text(ctx.text)
    seen.add(identity)
    tumors.append(record)


def to_payload(answer: LLMAnswer | dict | str, report_text: str) -> tuple[ExtractionPayload, list[str]]:
    """Convert an LLM answer into a validated payload for `report_text`, with conversion warnings.

    Raises:
        pydantic.ValidationError: the answer does not match `LLMAnswer`, or the converted payload is invalid.
    """
    if isinstance(answer, str):
        answer = parse_llm_answer(answer)
    elif isinstance(answer, dict):
        answer = LLMAnswer.model_validate(answer)
    report_key = _match_key(report_text)
    warnings: list[str] = []
    tumors: list[dict] = []
    seen: set[tuple] = set()
    spans: dict[tuple[str, tuple[int, int]], bool] = {}
    for lesion in answer.lesions:
        kept = _lesion_record(lesion, len(tumors) + 1, report_text, report_key, warnings)
        if kept is None:
            continue
        record, ctx = kept
        for part in split_by_measurement(record, ctx.text):
            part["id"] = len(tumors) + 1
            _keep_lesion(part, ctx, report_text, tumors, seen, spans, warnings)
    for stated in answer.organs:
        # The model called the organ abnormal but listed no lesion: the organ quote stands for one, when its
        # words pass the same checks as a lesion quote.
        if stated.state not in ("lesion", "equivocal"):
            continue
        side = stated.side if Organ(stated.organ) in PAIRED_ORGANS and stated.side != "both" else None
        if any(t["organ"] == stated.organ and (side is None or t["laterality"] in (side, "bilateral")) for t in tumors):
            continue
        group = group_word_in_text(stated.quote)
        stand_in = LLMLesion.model_construct(organ=stated.organ, quote=stated.quote,
                             side="none" if side is None else side,
                             location="", size="", size_bound="none", count=2 if group else 1,
                             count_exact=not group, attenuation="unknown", kind="lesion_unspecified",
                             certainty="possible" if stated.state == "equivocal" else "definite")
        kept = _lesion_record(stand_in, len(tumors) + 1, report_text, report_key, [])
        if kept is not None:
            warnings.append(f"organ {stated.organ}: lesion record made from the organ statement")
            tumors.append(kept[0])
    for record in _missed_lesions(report_text, report_key, tumors):
        warnings.append(f"lesion {record['id']} ({record['organ']}): made from a report sentence the answer left out")
        tumors.append(record)
    organs = _organ_statuses(answer, tumors, report_text, report_key, warnings)
    payload = ExtractionPayload.model_validate({"tumors": tumors, "organs": organs},
                                               context={"report_text": report_text})
    return payload, warnings


def schema_fingerprint() -> str:
    """Stable text of the LLM schema, for run keys and size measurements."""
    return json.dumps(llm_json_schema(), sort_keys=True, separators=(",", ":"))
