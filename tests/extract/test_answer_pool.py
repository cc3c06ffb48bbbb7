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
from schemas.tables import TUMORS_SCHEMA, payload_rows
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
    assert default_processes(256, cpu_count=2) == 2
    assert default_processes(256, cpu_count=8) == 4
    assert default_processes(64, cpu_count=64) == 4


def test_pool_gives_the_rows_of_parse_answer_and_raises_its_errors():
    async def go():
        async with AnswerPool(1, PROMPT.answer_model) as pool:
            assert len(pool.pids) == 1
            ok = await pool.parse(ANSWERS[LIVER_REPORT], LIVER_REPORT)
            many = await asyncio.gather(*(pool.parse(ANSWERS[KIDNEY_REPORT], KIDNEY_REPORT) for _ in range(300)),
                                        return_exceptions=True)
            with pytest.raises(AnswerError, match="does not match the schema"):
                await pool.parse('{"organs": []}', LIVER_REPORT)
        return ok, many

    (rows, warnings), many = asyncio.run(go())
    direct, direct_warnings = parse_answer(ANSWERS[LIVER_REPORT], LIVER_REPORT, PROMPT.answer_model)
    assert rows == payload_rows(direct) and warnings == direct_warnings
    assert rows.payload_json == direct.model_dump_json()
    largest_mm = TUMORS_SCHEMA.names.index("largest_diameter_mm") - 2  # the values follow the two key columns
    assert [t[largest_mm] for t in rows.tumors] == [22.0]
    kidney = payload_rows(parse_answer(ANSWERS[KIDNEY_REPORT], KIDNEY_REPORT, PROMPT.answer_model)[0])
    assert all(not isinstance(m, BaseException) and m[0] == kidney for m in many)


def test_every_process_of_the_pool_starts_and_takes_batches():
    async def go():
        async with AnswerPool(2, PROMPT.answer_model) as pool:
            pids = list(pool.pids)
            await asyncio.gather(*(pool.parse(ANSWERS[KIDNEY_REPORT], KIDNEY_REPORT) for _ in range(50)))
        return pids

    pids = asyncio.run(go())
    assert len(pids) == 2 and len(set(pids)) == 2


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
            assert (stats.answer_tasks > 0) == bool(processes) and stats.answer_tasks <= stats.calls
            tables[processes] = {t: _rows(store, t) for t in ("extractions", "tumors", "organ_findings")}
    assert tables[0] == tables[1]
    failed = [r for r in tables[1]["extractions"] if r["status"] == "failed"]
    assert len(failed) == 15 and all("attempt 1" in r["error"] and "attempt 2" in r["error"] for r in failed)


def _children(pid: int) -> list[str]:
    """Pids whose parent is `pid` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                out.append(stat.parent.name)
        except OSError:  # gone meanwhile
            pass
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_sigkilled_run_leaves_no_answer_process_and_the_rerun_stores_each_report_once(tmp_path: Path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from fake_server import Action, FakeLLMServer

    db = tmp_path / "k.duckdb"
    with Store(db) as store:
        add_reports(store, {f"a{i:03d}": f"Liver: {i + 2} mm cyst, report {i}." for i in range(200)})
    command = [sys.executable, "-m", "rsuper", "extract", "--backend", "openai", "--concurrency", "64",
               "--retries", "0", "--no-progress", "--json"]
    env = {**os.environ, "RSUPER_DB": str(db)}
    repo = Path(__file__).resolve().parents[2]
    with FakeLLMServer(respond=lambda i, body: Action(delay_s=2.0)) as server:
        proc = subprocess.Popen([*command, "--llm-url", server.url, "--answer-processes", "1"], cwd=repo, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        children: list[str] = []
        while time.monotonic() < deadline and not (children and len(server.requests) >= 64):
            time.sleep(0.1)
            children = _children(proc.pid)
        assert children, "the run started no answer process"
        proc.send_signal(signal.SIGKILL)
        proc.wait()

        def alive(pid: str) -> bool:
            try:
                return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            except OSError:
                return False

        deadline = time.monotonic() + 10
        while any(alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(c) for c in children)
        rerun = subprocess.run([*command, "--llm-url", server.url], cwd=repo, env=env, capture_output=True, text=True,
                               timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    with Store(db, read_only=True) as store:
        assert store.query("SELECT count(*) AS n, count(DISTINCT report_id) AS d FROM extractions").to_pylist() == [
            {"n": 200, "d": 200}]
