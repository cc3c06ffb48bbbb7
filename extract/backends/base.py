"""The one interface every LLM backend implements, and the types that cross it.

A backend turns a chat conversation plus a JSON schema into one completion. It owns transport concerns
(concurrency limits, timeouts, retries, structured-output dialect); the engine owns validation, repair, storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

Message = dict[str, str]


#: Longest report text sent to a model (characters): about 8 k tokens of report, which with the prompt fits the
#: context of the models rsuper runs; a longer one fails without a call (`rsuper extract --max-report-chars`).
MAX_REPORT_CHARS = 30_000


class SamplingConfig(BaseModel):
    """Decoding parameters; all of them are part of the run key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(2048, ge=16, le=16384,
                            description="output tokens per call (>= schemas.llm.ANSWER_TOKEN_BUDGET)")
    seed: int = 0


@dataclass(frozen=True)
class Completion:
    """One model answer.

    Attributes:
        text: the generated text (JSON when the backend honoured the schema).
        finish_reason: `stop`, `length` (hit max_tokens: never data), or what the server said.
        prompt_tokens: tokens of the conversation as the model saw it (0 when unknown).
        output_tokens: generated tokens (0 when unknown).
        latency_s: wall time of the call including retries (s).
        retries: transport retries spent on this call.
    """

    text: str
    finish_reason: str
    prompt_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    retries: int = 0


class BackendError(RuntimeError):
    """A call failed for good (transport errors past the retry budget, or a refused request)."""


class TransportError(BackendError):
    """No answer came (connection refused or dropped, timeout, HTTP 5xx) past the retries: a fault of the server,
    not of the report, so the engine leaves the report pending for the next run."""


@dataclass(frozen=True)
class BackendInfo:
    """Provenance of the model behind a backend (stored with every run)."""

    backend: str
    backend_version: str
    model_id: str
    model_revision: str = ""
    quantization: str = ""
    structured_output: str = ""
    #: Backend settings that change answers (part of the run key when set), e.g. speculative decoding.
    decoding: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """What the engine needs from a backend."""

    #: How many calls the engine should keep in flight.
    max_concurrency: int

    async def start(self) -> BackendInfo:
        """Connect or load the model; return its provenance."""

    async def complete(self, messages: list[Message], schema: dict[str, Any], sampling: SamplingConfig) -> Completion:
        """One chat completion constrained to `schema`.

        Raises:
            BackendError: the call failed for good.
        """

    async def aclose(self) -> None:
        """Release connections, threads or the model."""
