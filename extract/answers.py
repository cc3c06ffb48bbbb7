"""An LLM answer → a validated payload, or the error the repair turn sends back (shared by the engine, its answer
processes and the Ray workers)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, ValidationError

from extract.reading.convert import to_payload
from schemas.llm import ANSWER_MODELS, CitedAnswer, parse_llm_answer
from schemas.records import ExtractionPayload
from schemas.vocab import VOCABULARY_SHA256

_ROOT = Path(__file__).resolve().parents[1]
#: The code that turns an answer into stored rows: the reading rules, and the schemas they validate and lay out.
CONVERSION_SOURCES: tuple[Path, ...] = (
    *sorted((_ROOT / "extract" / "reading").glob("*.py")),
    *(_ROOT / "schemas" / f"{name}.py" for name in ("llm", "measure", "organ_tables", "records", "summary",
                                                     "tables", "vocab")),
)


def _conversion_sha256() -> str:
    digest = hashlib.sha256(VOCABULARY_SHA256.encode())
    for path in CONVERSION_SOURCES:
        # Line endings normalised: a checkout with CRLF converts the same way.
        digest.update(f"\x00{path.name}\x00".encode() + path.read_bytes().replace(b"\r\n", b"\n"))
    return digest.hexdigest()


#: Identity of the conversion rules in force (sources and vocabulary), stored with every extraction: a stored
#: answer converted under another digest is converted again (`extract.reconvert`), with no LLM call.
CONVERSION_SHA256 = _conversion_sha256()


#: How the errors of failed extractions that no conversion rejected begin (`extract.engine`): the server did not
#: answer the repair call, or the answer was cut at max_tokens. Converting the stored answer again cannot mend
#: them; `rsuper extract --retry-failed` can.
TRANSPORT_ERROR = "transport: "
LENGTH_ERROR = "output reached max_tokens"
NOT_CONVERSION_ERRORS = (TRANSPORT_ERROR, LENGTH_ERROR)


class AnswerError(ValueError):
    """An answer that cannot become a valid payload; the message is what the repair turn sends back."""


def _short_errors(exc: ValidationError, limit: int = 8) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', '')}" if loc else str(err.get("msg", "")))
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_answer(text: str, report_text: str, answer_model: type = CitedAnswer) -> tuple[ExtractionPayload, list[str]]:
    """Validate a raw answer (an `answer_model`: the prompt's format, by default the citing one) and convert it
    into a payload for `report_text`.

    Raises:
        AnswerError: not JSON, not an `answer_model`, or the converted payload breaks a rule.
    """
    try:
        answer = parse_llm_answer(text, answer_model)
    except ValidationError as exc:
        raise AnswerError(f"the answer does not match the schema: {_short_errors(exc)}") from exc
    return _converted(answer, report_text)


def parse_stored_answer(text: str, report_text: str) -> tuple[ExtractionPayload, list[str]]:
    """`parse_answer` for a stored answer in whichever format (`schemas.llm.ANSWER_MODELS`) it is written: the
    formats share no top-level key, so at most one validates. The citing format's error when none does."""
    for model in ANSWER_MODELS.values():
        try:
            answer = parse_llm_answer(text, model)
        except ValidationError:
            continue
        return _converted(answer, report_text)
    return parse_answer(text, report_text, CitedAnswer)


def _converted(answer: BaseModel, report_text: str) -> tuple[ExtractionPayload, list[str]]:
    try:
        return to_payload(answer, report_text)
    except ValidationError as exc:
        raise AnswerError(f"the answer breaks a rule: {_short_errors(exc)}") from exc
    except ValueError as exc:
        raise AnswerError(f"the answer breaks a rule: {exc}") from exc
