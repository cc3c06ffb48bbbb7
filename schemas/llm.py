"""The compact schema the LLM fills.

The model decides per organ (an explicit state, so "normal" and "not mentioned" differ) and lists lesions with
words quoted from the report; code (`extract.reading.convert.to_payload`) then parses sizes and units, maps
location words to sub-segments, fills attenuation from the wording and drops findings that are not lesions.
The JSON schema stays xgrammar-friendly: enums, bounded strings and arrays, no `allOf` / `uniqueItems` /
`multipleOf`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.vocab import LesionType, Organ

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


def schema_fingerprint() -> str:
    """Stable text of the LLM schema, for run keys and size measurements."""
    return json.dumps(llm_json_schema(), sort_keys=True, separators=(",", ":"))
