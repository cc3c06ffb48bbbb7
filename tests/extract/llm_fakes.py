"""Scripted answers, report texts and an in-process backend shared by the extraction tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pyarrow as pa

from extract.backends.base import BackendInfo, Completion, SamplingConfig

LIVER_REPORT = "Liver: 2.2 cm hypodense lesion in segment 8, likely a hemangioma. Spleen: Normal."
KIDNEY_REPORT = "Kidneys: 14 mm simple cyst in the upper pole of the left kidney. Pancreas: Unremarkable."
NORMAL_REPORT = "Liver: No focal lesion. Pancreas: Normal."


def lesion(**kw: Any) -> dict[str, Any]:
    base = {"organ": "liver", "side": "none", "location": "", "count": 1, "count_exact": True, "size": "",
            "size_bound": "none", "attenuation": "unknown", "kind": "lesion_unspecified", "certainty": "definite",
            "quote": ""}
    return {**base, **kw}


def cited(**kw: Any) -> dict[str, Any]:
    """One lesion of a citing answer (`schemas.llm.CitedLesion`), the first sentence's liver lesion by default."""
    return {"organ": "liver", "sentences": [1], "count": 1, "count_exact": True, **kw}


#: Answers in the default (citing) format: the shown report numbers its sentences from [1].
ANSWERS = {
    LIVER_REPORT: json.dumps({"lesions": [{"organ": "liver", "sentences": [1], "count": 1, "count_exact": True}],
                              "normal": ["spleen"], "resected": []}),
    KIDNEY_REPORT: json.dumps({"lesions": [{"organ": "kidney", "sentences": [1], "count": 1, "count_exact": True}],
                               "normal": ["pancreas"], "resected": []}),
    NORMAL_REPORT: json.dumps({"lesions": [], "normal": ["liver", "pancreas"], "resected": []}),
}


def add_reports(store: Any, texts: dict[str, str]) -> None:
    store.add_reports(pa.table({"report_id": list(texts), "text": list(texts.values())}), source="test")


class ScriptedBackend:
    """An in-process backend answering from a list of scripted results (str, Completion or exception)."""

    def __init__(self, script: list[Any], model_id: str = "scripted", max_concurrency: int = 4) -> None:
        self.script = list(script)
        self.max_concurrency = max_concurrency
        self.calls: list[list[dict[str, str]]] = []
        self.model_id = model_id

    async def start(self) -> BackendInfo:
        return BackendInfo(backend="scripted", backend_version="0", model_id=self.model_id)

    async def complete(self, messages, schema, sampling: SamplingConfig) -> Completion:
        self.calls.append(messages)
        item = self.script.pop(0) if self.script else "{}"
        if isinstance(item, Exception):
            raise item
        if isinstance(item, Completion):
            return item
        return Completion(text=item, finish_reason="stop", prompt_tokens=100, output_tokens=20)

    async def aclose(self) -> None:
        pass


class TextKeyedBackend:
    """An in-process backend that answers each report from `answers` by its text (else no finding), whatever the
    order of calls: the same answers in one process or on several workers. Texts in `unanswered` get no answer
    (a transport error), as from a dead server."""

    def __init__(self, answers: dict[str, str], unanswered: frozenset[str] = frozenset(),
                 model_id: str = "keyed", max_concurrency: int = 8, delay_s: float = 0.0) -> None:
        self.answers, self.unanswered = answers, unanswered
        self.model_id, self.max_concurrency, self.delay_s = model_id, max_concurrency, delay_s

    async def start(self) -> BackendInfo:
        return BackendInfo(backend="keyed", backend_version="0", model_id=self.model_id)

    async def complete(self, messages, schema, sampling: SamplingConfig) -> Completion:
        from extract.backends.base import TransportError
        from fake_server import EMPTY_ANSWER, report_of

        text = report_of({"messages": messages})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if text in self.unanswered:
            raise TransportError("connection refused (scripted)")
        return Completion(text=self.answers.get(text, EMPTY_ANSWER), finish_reason="stop", prompt_tokens=100,
                          output_tokens=20)

    async def aclose(self) -> None:
        pass
