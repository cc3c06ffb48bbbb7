"""The compact schema the LLM fills, and the deterministic conversion into a validated `ExtractionPayload`.

The model decides per organ (an explicit state, so "normal" and "not mentioned" differ) and lists lesions with
words quoted from the report; code then parses sizes and units, maps location words to sub-segments, fills
attenuation from the wording and drops findings that are not lesions. The JSON schema stays xgrammar-friendly:
enums, bounded strings and arrays, no `allOf` / `uniqueItems` / `multipleOf`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.measure import parse_size_text
from schemas.records import ExtractionPayload, _match_key
from schemas.vocab import (
    PAIRED_ORGANS,
    TYPE_ORGANS,
    LesionType,
    Organ,
    attenuation_in_text,
    side_in_text,
    subsegments_in_text,
)

OrganKey = Literal[tuple(o.value for o in Organ)]  # type: ignore[valid-type]
KindKey = Literal[tuple(t.value for t in LesionType)]  # type: ignore[valid-type]

MAX_LESIONS = 12
MAX_ORGANS = 19


class _LLMModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LLMOrgan(_LLMModel):
    organ: OrganKey
    side: Literal["left", "right", "both"]
    state: Literal["lesion", "equivocal", "no_lesion", "resected"]
    quote: str = Field(max_length=160)


class LLMLesion(_LLMModel):
    organ: OrganKey
    side: Literal["left", "right", "both", "none"]
    location: str = Field(max_length=60, description="location words as written, or empty")
    count: int = Field(ge=1, le=99)
    count_exact: bool
    size: str = Field(max_length=40, description="the current measurement exactly as written, or empty")
    size_bound: Literal["none", "subcentimeter", "tiny", "small", "large", "massive"]
    attenuation: Literal["hypo", "iso", "hyper", "heterogeneous", "unknown"]
    kind: KindKey
    certainty: Literal["definite", "probable", "possible"]
    quote: str = Field(max_length=200)


class LLMAnswer(_LLMModel):
    organs: list[LLMOrgan] = Field(max_length=MAX_ORGANS)
    lesions: list[LLMLesion] = Field(max_length=MAX_LESIONS)


def llm_json_schema() -> dict[str, Any]:
    """JSON schema for constrained decoding (vLLM `json_schema`, llama.cpp `json_object` + schema)."""
    return LLMAnswer.model_json_schema()


# --- deterministic conversion ------------------------------------------------------------------------

#: Words that make a finding "not a lesion" when no lesion word is present (stones, collections, ...).
_NOT_LESION = re.compile(
    r"\b(?:stones?|calculus|calculi|cholelithiasis|nephrolithiasis|diverticul\w*|steatosis|fatty infiltration|"
    r"collections?|abscess|atelectasis|hydronephrosis|ductal dilatation|dilated duct|granuloma|scar(?:ring)?)\b",
    re.IGNORECASE,
)
_LESION_WORD = re.compile(
    r"\b(?:lesions?|mass(?:es)?|nodules?|nodular|cysts?|cystic|tumou?rs?|metastas[ie]s|neoplasm|carcinoma|"
    r"hypodensit(?:y|ies)|hyperdensit(?:y|ies)|foc(?:us|i)|hemangiomas?|adenomas?|implants?|thickening|"
    r"lymphadenopathy|adenopathy|enlarged|pseudocyst)\b",
    re.IGNORECASE,
)
_NODE_ABNORMAL = re.compile(
    r"\b(?:enlarged|pathologic(?:al)?|suspicious|metasta\w*|necrotic|bulky|lymphadenopathy|adenopathy)\b",
    re.IGNORECASE,
)
_NEGATED = re.compile(r"^\s*(?:no|without|negative for|resolved|free of)\b", re.IGNORECASE)
_HEDGE_PROBABLE = re.compile(r"\b(?:likely|probabl[ey]|consistent with|compatible with|in keeping with|"
                             r"suggest\w*|highly suspicious)\b", re.IGNORECASE)
_HEDGE_POSSIBLE = re.compile(r"\b(?:suspicious for|concerning for|cannot be excluded|cannot exclude|"
                             r"possibl[ey]|questionable|may represent)\b", re.IGNORECASE)
_EACH = re.compile(r"\beach\b|\b(?:two|three|four|five|\d+)\s+(?:\d+(?:\.\d+)?\s*(?:mm|cm))", re.IGNORECASE)
_QUALIFIER_WORDS = {"subcentimeter": 10.0}


def _canonical_quote(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


def _in_report(quote: str, report_key: str) -> bool:
    return bool(quote) and _match_key(quote) in report_key


def _lesion_record(lesion: LLMLesion, record_id: int, report_key: str, warnings: list[str]) -> dict | None:
    organ = Organ(lesion.organ)
    quote = _canonical_quote(lesion.quote)
    context = f"{lesion.location} {quote}"
    where = f"lesion {record_id} ({organ.value})"
    if _NEGATED.search(quote) and not _LESION_WORD.search(quote.split(",")[0][4:]):
        warnings.append(f"{where}: quote is a negation; dropped")
        return None
    if _NOT_LESION.search(quote) and not _LESION_WORD.search(quote):
        warnings.append(f"{where}: not a lesion (stone/collection/...); dropped")
        return None
    if organ is Organ.LYMPH_NODE and not _NODE_ABNORMAL.search(quote):
        warnings.append(f"{where}: lymph node not called enlarged or suspicious; dropped")
        return None

    side = {"both": "bilateral", "none": None}.get(lesion.side, lesion.side)
    if organ in PAIRED_ORGANS:
        side = side or side_in_text(context)
    else:
        side = None
    count, count_exact = lesion.count, lesion.count_exact
    if not count_exact and count < 2:
        count = 2  # "multiple" without a number: at least two
    if side == "bilateral" and count == 1 and count_exact:
        count, count_exact = 2, False

    size: dict[str, Any] = {"status": "not_reported"}
    size_text = _canonical_quote(lesion.size)
    diameters = parse_size_text(size_text) if size_text else None
    if diameters is not None and not _in_report(size_text, report_key):
        warnings.append(f"{where}: size {size_text!r} is not in the report; ignored")
        diameters = None
    if diameters is not None:
        group = count > 1 or not count_exact
        refers_to = "lesion" if not group else ("each_of_group" if _EACH.search(quote) else "largest_of_group")
        size = {"status": "measured", "diameters_mm": diameters, "reported_text": size_text, "refers_to": refers_to}
    elif lesion.size_bound == "subcentimeter" or re.search(r"\bsub-?centimeter\b", quote, re.IGNORECASE):
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
    elif _HEDGE_POSSIBLE.search(quote):
        type_certainty = "possible"
    elif _HEDGE_PROBABLE.search(quote):
        type_certainty = "probable"
    else:
        type_certainty = "stated"
    attenuation = attenuation_in_text(quote) or lesion.attenuation
    return {
        "id": record_id,
        "organ": organ.value,
        "laterality": side,
        "segments": [s.value for s in subsegments_in_text(organ, context)],
        "location_text": lesion.location or None,
        "lesion_type": kind.value,
        "type_certainty": type_certainty,
        "presence": lesion.certainty,
        "attenuation": attenuation,
        "size": size,
        "count": count,
        "count_exact": count_exact,
        "innumerable": bool(re.search(r"\binnumerable|too numerous to count\b", quote, re.IGNORECASE)),
        "evidence": [quote[:400]] if _in_report(quote, report_key) and len(quote) >= 3 else [],
    }


def _organ_statuses(answer: LLMAnswer, tumors: list[dict], report_key: str, warnings: list[str]) -> list[dict]:
    statuses: dict[tuple[str, str | None], dict] = {}
    for stated in answer.organs:
        organ = Organ(stated.organ)
        side = stated.side if organ in PAIRED_ORGANS and stated.side != "both" else None
        key = (organ.value, side)
        if key in statuses:
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
    return list(statuses.values())


def to_payload(answer: LLMAnswer | dict | str, report_text: str) -> tuple[ExtractionPayload, list[str]]:
    """Convert an LLM answer into a validated payload for `report_text`, with conversion warnings.

    Raises:
        pydantic.ValidationError: the answer does not match `LLMAnswer`, or the converted payload is invalid.
    """
    if isinstance(answer, str):
        answer = LLMAnswer.model_validate_json(answer)
    elif isinstance(answer, dict):
        answer = LLMAnswer.model_validate(answer)
    report_key = _match_key(report_text)
    warnings: list[str] = []
    tumors: list[dict] = []
    seen: set[tuple] = set()
    for lesion in answer.lesions:
        record = _lesion_record(lesion, len(tumors) + 1, report_key, warnings)
        if record is None:
            continue
        # The same lesion repeated (findings + impression) collapses into one record.
        identity = (record["organ"], record["laterality"], tuple(record["size"].get("diameters_mm", ())),
                    tuple(record["segments"]))
        if identity in seen and record["size"]["status"] == "measured":
            warnings.append(f"lesion {record['id']}: duplicate of an earlier record; dropped")
            continue
        seen.add(identity)
        tumors.append(record)
    organs = _organ_statuses(answer, tumors, report_key, warnings)
    payload = ExtractionPayload.model_validate({"tumors": tumors, "organs": organs},
                                               context={"report_text": report_text})
    return payload, warnings


def schema_fingerprint() -> str:
    """Stable text of the LLM schema, for run keys and size measurements."""
    return json.dumps(llm_json_schema(), sort_keys=True, separators=(",", ":"))
