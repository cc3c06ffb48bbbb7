"""A report as (section header, sentence) pairs, and a sentence as clauses."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from schemas.vocab import NOT_FINDINGS_HEADERS

_NOT_FINDINGS = re.compile(r"^(?:" + "|".join(re.escape(w) for w in NOT_FINDINGS_HEADERS) + r")\b",
                          re.IGNORECASE)
CLAUSE_BREAK = re.compile(r"[,;:]|\b(?:but|however|whereas)\b", re.IGNORECASE)
# A sentence ends at ; ! ? a line break, or a period that is not a decimal point ("2.3 cm").
SENTENCE_BREAK = re.compile(r"[;!?\n]|\.(?!\d)")
# "1." opening an item of a numbered list is no sentence of its own.
_LIST_NUMBER = re.compile(r"\s*\(?\d{1,2}\)?\s*")
_LIST_ITEM_LINE = re.compile(r"\s*(?:\(?\d{1,2}[.)]|[-*\u2022])\s+\S")
_TITLE_CHARS = 42
# A section header opens a line or follows a sentence end: "Right kidney: ...", "... normal. Spleen: ...".
HEADER = re.compile(r"(?:^|[.;]\s+)\s*([A-Za-z][A-Za-z /&,()-]{0,40}):")


def is_not_findings_header(header: str) -> bool:
    """Whether a section header opens history or technique (`NOT_FINDINGS_HEADERS`), never current findings."""
    return bool(_NOT_FINDINGS.match(header))


def clauses(text: str) -> list[tuple[int, int]]:
    """(start, end) of every clause of `text`, split at `CLAUSE_BREAK`."""
    bounds = [0, *(m.start() for m in CLAUSE_BREAK.finditer(text)), len(text)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


@dataclass(frozen=True)
class Sentence:
    """One sentence of a report: its section header and its (stripped) text's offsets in the report."""

    header: str
    start: int
    end: int


@functools.lru_cache(maxsize=16)  # read several times per conversion (numbering, citations, cleared organs)
def sentence_spans(report: str) -> tuple[Sentence, ...]:
    """Every sentence of the report in order, with its section header and character offsets."""
    out: list[Sentence] = []
    header = ""
    carried = ""  # a history or technique header goes on to the next lines ("COMPARISON: ...\nAt diagnosis, ...")
    pos = 0
    for line in report.splitlines(keepends=True):
        line_start, pos = pos, pos + len(line)
        stripped = line.strip()
        if stripped.endswith(":") and len(stripped) <= 42:
            header, carried = stripped[:-1], ""
            continue
        if not stripped or ":" in stripped[:50] or stripped.endswith(":") or _LIST_ITEM_LINE.match(stripped):
            carried = ""  # a blank line, a label ("Target 1: ...", "RECIST targets:") or a list opens findings
        line_header = carried or header
        part_start = 0
        body = line.rstrip("\r\n")
        for m in [*SENTENCE_BREAK.finditer(body), None]:
            part_end = m.start() if m else len(body)
            part = body[part_start:part_end]
            found = HEADER.match(part)
            if found:
                line_header = found.group(1).strip()
            if part.strip() and not _LIST_NUMBER.fullmatch(part):
                lead = len(part) - len(part.lstrip())
                start = line_start + part_start + lead
                out.append(Sentence(line_header, start, start + len(part.strip())))
            if m:
                part_start = m.end()
        if stripped:
            carried = line_header if is_not_findings_header(line_header) else ""
    return tuple(out)




def list_title(report: str, position: int) -> str:
    """The title line of the list whose item line holds `position` ("Current nodules" above "1. Right upper lobe,
    apical segment: solid, 9 x 7 mm"), without its colon; "" when that line is no list item or the items above
    it lead up to no title."""
    start = report.rfind("\n", 0, position) + 1
    if not _LIST_ITEM_LINE.match(report, start):
        return ""
    while start > 0:
        above = report.rfind("\n", 0, start - 1) + 1
        line = report[above:start - 1].strip()
        if not _LIST_ITEM_LINE.match(line):
            return line[:-1].strip() if line.endswith(":") and len(line) <= _TITLE_CHARS else ""
        start = above
    return ""


@functools.lru_cache(maxsize=16)  # read twice per conversion (cleared organs, missed lesions)
def report_sentences(report: str) -> tuple[tuple[str, str], ...]:
    """(section header, sentence) for every sentence of the report."""
    return tuple((s.header, report[s.start:s.end]) for s in sentence_spans(report))


def numbered_report(report: str) -> str:
    """The report with "[n] " before its n-th sentence (n from 1), as the citing answer format shows it."""
    parts: list[str] = []
    pos = 0
    for n, sentence in enumerate(sentence_spans(report), start=1):
        parts += [report[pos:sentence.start], f"[{n}] "]
        pos = sentence.start
    parts.append(report[pos:])
    return "".join(parts)
