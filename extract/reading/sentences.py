"""A report as (section header, sentence) pairs, and a sentence as clauses."""

from __future__ import annotations

import functools
import re

from schemas.vocab import NOT_FINDINGS_HEADERS

_NOT_FINDINGS = re.compile(r"^(?:" + "|".join(re.escape(w) for w in NOT_FINDINGS_HEADERS) + r")\b",
                          re.IGNORECASE)
CLAUSE_BREAK = re.compile(r"[,;:]|\b(?:but|however|whereas)\b", re.IGNORECASE)
# A sentence ends at ; ! ? a line break, or a period that is not a decimal point ("2.3 cm").
SENTENCE_BREAK = re.compile(r"[;!?\n]|\.(?!\d)")
# A section header opens a line or follows a sentence end: "Right kidney: ...", "... normal. Spleen: ...".
HEADER = re.compile(r"(?:^|[.;]\s+)\s*([A-Za-z][A-Za-z /&,()-]{0,40}):")


def is_not_findings_header(header: str) -> bool:
    """Whether a section header opens history or technique (`NOT_FINDINGS_HEADERS`), never current findings."""
    return bool(_NOT_FINDINGS.match(header))


def clauses(text: str) -> list[tuple[int, int]]:
    """(start, end) of every clause of `text`, split at `CLAUSE_BREAK`."""
    bounds = [0, *(m.start() for m in CLAUSE_BREAK.finditer(text)), len(text)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


@functools.lru_cache(maxsize=16)  # read twice per conversion (cleared organs, missed lesions)
def report_sentences(report: str) -> tuple[tuple[str, str], ...]:
    """(section header, sentence) for every sentence of the report."""
    out: list[tuple[str, str]] = []
    header = ""
    for line in report.splitlines():
        stripped = line.strip()
        if stripped.endswith(":") and len(stripped) <= 42:
            header = stripped[:-1]
            continue
        line_header = header
        for part in SENTENCE_BREAK.split(line):
            m = HEADER.match(part)
            if m:
                line_header = m.group(1).strip()
            if part.strip():
                out.append((line_header, part.strip()))
    return tuple(out)
