"""An LLM answer → a validated payload, or the error the repair turn sends back (shared by the engine, its answer
processes and the Ray workers)."""

from __future__ import annotations

from pydantic import ValidationError

from extract.reading.convert import to_payload
from schemas.llm import CitedAnswer, parse_llm_answer
from schemas.records import ExtractionPayload


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
    try:
        return to_payload(answer, report_text)
    except ValidationError as exc:
        raise AnswerError(f"the answer breaks a rule: {_short_errors(exc)}") from exc
    except ValueError as exc:
        raise AnswerError(f"the answer breaks a rule: {exc}") from exc
