"""Answer validation in worker processes: the same rows as validation in the event loop, errors included."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from extract.answer_pool import AnswerPool, default_processes
from extract.backends.base import SamplingConfig
from extract.engine import AnswerError, EngineConfig, parse_answer, run_extraction
from extract.prompting import load_prompt
from extract.store import Store
from llm_fakes import ANSWERS, KIDNEY_REPORT, LIVER_REPORT, NORMAL_REPORT, TextKeyedBackend, add_reports

PROMPT = load_prompt()
RUN_COLUMNS = {"run_id", "created_at", "latency_s"}


def _rows(store: Store, table: str) -> list[dict]:
    rows = store.query(f"SELECT * FROM {table}").to_pylist()
    return sorted(({k: v for k, v in r.items() if k not in RUN_COLUMNS} for r in rows),
                  key=lambda r: json.dumps(r, sort_keys=True, default=str))


def test_default_processes_only_for_many_calls_on_spare_cores():
    assert default_processes(1, cpu_count=16) == 0  # the embedded model: one call at a time
    assert default_processes(256, cpu_count=1) == 0
    assert default_processes(256, cpu_count=2) == 1
    assert default_processes(256, cpu_count=8) == 4
    assert default_processes(64, cpu_count=64) == 4


def test_pool_gives_what_parse_answer_gives_and_raises_its_errors():
    async def go():
        async with AnswerPool(1, PROMPT.answer_model) as pool:
            assert len(pool.pids) == 1
            ok = await pool.parse(ANSWERS[LIVER_REPORT], LIVER_REPORT)
            many = await asyncio.gather(*(pool.parse(ANSWERS[KIDNEY_REPORT], KIDNEY_REPORT) for _ in range(300)),
                                        return_exceptions=True)
            with pytest.raises(AnswerError, match="does not match the schema"):
                await pool.parse('{"organs": []}', LIVER_REPORT)
        return ok, many

    (payload, warnings), many = asyncio.run(go())
    direct, direct_warnings = parse_answer(ANSWERS[LIVER_REPORT], LIVER_REPORT, PROMPT.answer_model)
    assert payload.model_dump_json() == direct.model_dump_json() and warnings == direct_warnings
    assert payload.tumors[0].size.largest_mm == 22.0
    kidney = parse_answer(ANSWERS[KIDNEY_REPORT], KIDNEY_REPORT, PROMPT.answer_model)[0].model_dump_json()
    assert all(not isinstance(m, BaseException) and m[0].model_dump_json() == kidney for m in many)


def test_pool_needs_a_process():
    with pytest.raises(ValueError, match="at least 1"):
        AnswerPool(0, PROMPT.answer_model)


def test_a_run_with_answer_processes_stores_the_rows_of_one_without(tmp_path: Path):
    texts = {f"r{i:03d}": f"{[LIVER_REPORT, KIDNEY_REPORT, NORMAL_REPORT, 'Unreadable.'][i % 4]} Exam {i}."
             for i in range(60)}
    answers = {t: ANSWERS[b] for t in texts.values() for b in (LIVER_REPORT, KIDNEY_REPORT, NORMAL_REPORT)
               if t.startswith(b)}
    answers |= {t: '{"organs": []}' for t in texts.values() if t.startswith("Unreadable.")}  # fails twice
    tables = {}
    for processes in (0, 1):
        with Store(tmp_path / f"p{processes}.duckdb") as store:
            add_reports(store, texts)
            stats = asyncio.run(run_extraction(store, TextKeyedBackend(answers, max_concurrency=64), PROMPT,
                                               SamplingConfig(), EngineConfig(progress=False,
                                                                              answer_processes=processes)))
            assert (stats.ok, stats.failed, stats.answer_processes) == (45, 15, processes)
            tables[processes] = {t: _rows(store, t) for t in ("extractions", "tumors", "organ_findings")}
    assert tables[0] == tables[1]
    failed = [r for r in tables[1]["extractions"] if r["status"] == "failed"]
    assert len(failed) == 15 and all("attempt 1" in r["error"] and "attempt 2" in r["error"] for r in failed)
