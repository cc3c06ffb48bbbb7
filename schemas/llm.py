"""The compact schemas the LLM fills: the citing format (`CitedAnswer`, the default) and the quoting one
(`LLMAnswer`).

Citing: the report is shown with numbered sentences; the model names each lesion's organ, the numbers of the
sentences that describe it and its count, plus the organs the report calls normal or resected. Everything else
(size, unit, place, side, attenuation, kind, doubt) is read by code from the cited sentences, so an answer is a
few numbers and enum words per lesion.

Quoting: the model decides per organ (an explicit state, so "normal" and "not mentioned" differ) and lists
lesions with words quoted from the report; code (`extract.reading.convert.to_payload`) then parses sizes and units,
maps location words to sub-segments, fills attenuation from the wording and drops findings that are not lesions.
The JSON schema stays xgrammar-friendly: enums, bounded strings and arrays, no `allOf` / `uniqueItems` /
`multipleOf`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

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


#: The highest sentence number a citation may hold (a longer report's later sentences are read by the backstop only).
MAX_SENTENCES = 400


class CitedLesion(_LLMModel):
    organ: OrganKey
    sentences: list[Annotated[int, Field(ge=1, le=MAX_SENTENCES)]] = Field(min_length=1, max_length=8,
                                 description="numbers of the sentences that describe this lesion")
    count: int = Field(ge=1, le=99)
    count_exact: bool


class CitedAnswer(_LLMModel):
    lesions: list[CitedLesion] = Field(max_length=MAX_LESIONS)
    normal: list[OrganKey] = Field(max_length=MAX_ORGANS)
    resected: list[OrganKey] = Field(max_length=4)


#: Answer formats by name, as a prompt template's `answer_format` names them.
ANSWER_MODELS: dict[str, type[_LLMModel]] = {"cite": CitedAnswer, "quote": LLMAnswer}


def parse_llm_answer(text: str, model: type[_LLMModel] = LLMAnswer):
    """An answer text as an instance of `model` (`LLMAnswer` or `CitedAnswer`).

    JSON forbids raw control characters inside strings, but llama.cpp's schema grammar lets a model copy a line
    break of the report into a quote. Such an answer is read with Python's non-strict decoder, which keeps the
    character as it is; everything else about the schema is still checked.

    Raises:
        pydantic.ValidationError: not JSON, or not an `LLMAnswer`.
    """
    from pydantic import ValidationError

    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        if not any(e["type"] == "json_invalid" and "control character" in e["msg"] for e in exc.errors()):
            raise
        try:
            data = json.loads(text, strict=False)
        except ValueError:
            raise exc from None
    return model.model_validate(data)


def llm_json_schema(model: type[_LLMModel] = LLMAnswer) -> dict[str, Any]:
    """JSON schema for constrained decoding (vLLM `json_schema`, llama.cpp `json_object` + schema)."""
    return model.model_json_schema()


def schema_fingerprint(model: type[_LLMModel] = LLMAnswer) -> str:
    """Stable text of an LLM schema, for run keys and size measurements."""
    return json.dumps(llm_json_schema(model), sort_keys=True, separators=(",", ":"))
