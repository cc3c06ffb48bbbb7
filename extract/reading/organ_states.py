"""Organ statements of the answer reconciled with the lesion records, plus the organs the report clears."""

from __future__ import annotations

import re
from typing import Any

from extract.reading.negation import lesion_assertion
from extract.reading.organs import named_organs, organs_named_by_word
from extract.reading.quotes import canonical_quote, in_report, locate_quote
from extract.reading.sentences import report_sentences
from schemas.llm import LLMAnswer
from schemas.vocab import PAIRED_ORGANS, Organ

# Wording that clears an organ: "unremarkable", "normal" ("normal in size" too), "clear", "homogeneous", "no focal
# lesion", "no lymphadenopathy", "no enlarged lymph nodes", "not enlarged", and a granuloma (a healed infection).
_NORMAL = re.compile(
    r"\b(?:unremarkable|normal(?! caliber| calibre)|clear|within normal limits|not enlarged|homogeneous|granulomas?|"
    r"no(?:\s+\S+){0,4}?\s+(?:lesions?|mass(?:es)?|nodules?|lymphadenopathy|adenopathy|metastas[ie]s|"
    r"abnormalit(?:y|ies)|tumou?rs?|(?:lymph\s+)?nodes?)|without(?:\s+\S+){0,3}?\s+(?:lesions?|mass(?:es)?|nodules?))\b",
    re.IGNORECASE)

_VOCABULARY_RANK = {organ: rank for rank, organ in enumerate(Organ)}


def clears_organ(organ: Organ, sentence: str) -> bool:
    """Whether `sentence` calls `organ` normal in so many words and asserts no lesion of it."""
    return bool(_NORMAL.search(sentence)) and lesion_assertion(organ, sentence) == "none"


def normal_organs(report: str) -> dict[Organ, str]:
    """Organs a sentence of the report clears ("The liver, spleen and kidneys are unremarkable.",
    "Spleen: Normal.", "No lymphadenopathy."), with that sentence. Organs named in the sentence count; when it
    names none, its section header's. A sentence that asserts a lesion of the organ clears nothing."""
    cleared: dict[Organ, str] = {}
    for header, sentence in report_sentences(report):
        if not _NORMAL.search(sentence):
            continue
        organs = organs_named_by_word(sentence)
        if not organs and header:
            organs = organs_named_by_word(header)
        for organ in sorted(organs, key=_VOCABULARY_RANK.__getitem__):  # a set's order varies with PYTHONHASHSEED
            if lesion_assertion(organ, sentence) == "none":
                cleared.setdefault(organ, sentence)
    return cleared


def organ_statuses(answer: LLMAnswer, tumors: list[dict], report_text: str, report_key: str,
                   warnings: list[str]) -> list[dict]:
    """The payload's organ statuses: the answer's organ statements whose quote is about the organ, states
    reconciled with the lesion records `tumors`, and the organs the report clears (`normal_organs`) that no
    statement or record covers."""
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
        quote = canonical_quote(stated.quote)
        status: dict[str, Any] = {"organ": organ.value, "laterality": side,
                                  "evidence": [quote] if in_report(quote, report_key) and len(quote) >= 3 else []}
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
