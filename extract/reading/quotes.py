"""Where a quote of the answer sits in the report: its matched text, sentence and section header."""

from __future__ import annotations

import functools
import re
import unicodedata
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from extract.reading.sentences import HEADER, SENTENCE_BREAK, list_title
from schemas.records import match_key


def canonical_quote(text: str) -> str:
    """`text` NFKC-normalised and stripped, as quotes are compared and stored."""
    return unicodedata.normalize("NFKC", text).strip()


def in_report(quote: str, report_key: str) -> bool:
    """Whether a non-empty `quote` occurs in the report whose `match_key` is `report_key`."""
    return bool(quote) and match_key(quote) in report_key


@dataclass(frozen=True)
class QuoteContext:
    """Where a quote sits in the report.

    Attributes:
        span: (start, end) character offsets of the matched text in the NFKC-normalised report.
        text: the matched report text (the quote, or its longest part found in the report).
        sentence: the sentence (up to `;`, `.`, line break) holding the match.
        header: the section header of its line ("Right kidney"), or "".
        title: the title of the list whose item line holds it (`sentences.list_title`), or "".
    """

    span: tuple[int, int]
    text: str
    sentence: str
    header: str
    title: str = ""


_WHITESPACE_RUN = re.compile(r"\s+")


def normalised_with_index(text: str) -> tuple[str, list[int]]:
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
    return normalised_chars(text)


def normalised_chars(text: str) -> tuple[str, list[int]]:
    """`normalised_with_index` for any text, character by character."""
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
        norm: `text` casefolded with whitespace runs collapsed (`normalised_with_index`).
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
    norm, index = normalised_with_index(text)
    breaks = list(SENTENCE_BREAK.finditer(text))
    return _ReportText(text, norm, index, [m.start() for m in breaks], [m.end() for m in breaks])


def locate_quote(quote: str, report: str) -> QuoteContext | None:
    """Find `quote` in `report` (case and whitespace insensitive; failing that, its longest part of three or
    more words) with its sentence and section header. None when no part of it is in the report."""
    indexed = _report_text(report)
    report, norm, index = indexed.text, indexed.norm, indexed.index
    for fragment in _quote_fragments(unicodedata.normalize("NFKC", quote)):
        key = match_key(fragment)
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
        headers = list(HEADER.finditer(report[line_start:start]))
        header_text = headers[-1].group(1).strip() if headers else ""
        if not header_text and line_start > 0:
            previous = report[: line_start - 1].rsplit("\n", 1)[-1].strip()
            if previous.endswith(":") and len(previous) <= 42:
                header_text = previous[:-1]
        return QuoteContext((start, end), report[start:end], report[sent_start:sent_end].strip(), header_text,
                            list_title(report, start))
    return None


# "Opinion:" closes British reports
_IMPRESSION = re.compile(r"\b(?:IMPRESSION|CONCLUSIONS?|SUMMARY|OPINION)\b|\b(?:Impression|Conclusions?|Opinion)\s*:")


def in_impression(report: str, position: int) -> bool:
    """Whether `position` of the (NFKC) report lies in its impression / conclusion section."""
    return bool(_IMPRESSION.search(_report_text(report).text[:position]))
