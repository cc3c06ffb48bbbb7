"""`rsuper extract --engine ray` on a local Ray cluster (CPU): the rows a direct run stores, pending reports left for
the next run, a killed driver resumed from its shards, the CLI with an OpenAI-compatible server behind it."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from fake_server import FakeLLMServer  # noqa: E402
from llm_fakes import ANSWERS, KIDNEY_REPORT, LIVER_REPORT, NORMAL_REPORT, TextKeyedBackend, add_reports  # noqa: E402

from extract.backends.base import SamplingConfig  # noqa: E402
from extract.engine import EngineConfig, exit_code, run_extraction  # noqa: E402
from extract.prompting import load_prompt  # noqa: E402
from extract.ray_engine import RayConfig, run_ray_extraction  # noqa: E402
from extract.shards import finished_shards  # noqa: E402
from extract.store import Store  # noqa: E402

HERE = Path(__file__).parent
REPO = HERE.parents[1]
BASE_TEXTS = [LIVER_REPORT, KIDNEY_REPORT, NORMAL_REPORT]
#: Run-specific columns; every other column of every table must be the same byte for byte.
RUN_COLUMNS = {"run_id", "created_at", "latency_s"}


def _texts(n: int) -> dict[str, str]:
    """n reports: the three scripted texts with an exam number (distinct texts), and every fifth id sharing the
    text of the one before (one call for both)."""
    texts = {}
    for i in range(n):
        texts[f"r{i:03d}"] = texts[f"r{i - 1:03d}"] if i % 5 == 4 else f"{BASE_TEXTS[i % 3]} Exam {i}."
    return texts


def _answers(texts: dict[str, str]) -> dict[str, str]:
    return {t: ANSWERS[b] for t in texts.values() for b in BASE_TEXTS if t.startswith(b)}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # Workers import the test fakes (tests/extract) as the driver does.
    path = os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def _rows(db: Path, table: str) -> list[dict]:
    with Store(db, read_only=True) as s:
        rows = s.query(f"SELECT * FROM {table}").to_pylist()
    return sorted(({k: v for k, v in r.items() if k not in RUN_COLUMNS} for r in rows),
                  key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _ray_run(db: Path, factory, **ray_kw):
    with Store(db) as store:
        return run_ray_extraction(store, factory, load_prompt(), SamplingConfig(), EngineConfig(progress=False),
                                  RayConfig(**{"workers": 2, "cpus_per_worker": 0.5, "block_reports": 7, **ray_kw}))


def test_ray_run_stores_the_rows_of_a_direct_run(tmp_path):
    texts = _texts(40)
    factory = functools.partial(TextKeyedBackend, _answers(texts))
    direct, on_ray = tmp_path / "direct.duckdb", tmp_path / "ray.duckdb"
    for db in (direct, on_ray):
        with Store(db) as s:
            add_reports(s, texts)
    with Store(direct) as s:
        asyncio.run(run_extraction(s, factory(), load_prompt(), SamplingConfig(), EngineConfig(progress=False)))
    stats = _ray_run(on_ray, factory)
    assert (stats.pending, stats.ok, stats.failed, stats.left_pending) == (40, 40, 0, 0)
    assert stats.calls == 32  # 8 of the 40 ids share a text
    for table in ("extractions", "tumors", "organ_findings"):
        assert _rows(on_ray, table) == _rows(direct, table), table
    with Store(on_ray, read_only=True) as s:
        shards = s.query("SELECT n_extractions, run_id FROM extraction_shards").to_pylist()
        run = s.query("SELECT backend, outcome, n_ok FROM extraction_runs").to_pylist()
        assert s.query("SELECT count(*) AS n FROM tumors WHERE largest_diameter_mm = 22").to_pylist() == [{"n": 14}]
    assert sum(r["n_extractions"] for r in shards) == 40 and len(shards) >= 40 // 7
    assert run == [{"backend": "ray+keyed", "outcome": "done", "n_ok": 40}]
    assert not any((tmp_path / "ray.duckdb.shards" / stats.run_id).glob(".inputs"))  # inputs removed after the run
    # Nothing is pending any more: a second run calls nothing and stores nothing.
    again = _ray_run(on_ray, factory)
    assert (again.pending, again.calls) == (0, 0)
    assert len(_rows(on_ray, "extractions")) == 40


def test_unanswered_reports_stay_pending_for_the_next_run(tmp_path):
    texts = _texts(12)
    answers = _answers(texts)
    silent = frozenset(texts[r] for r in ("r001", "r006"))
    db = tmp_path / "s.duckdb"
    with Store(db) as s:
        add_reports(s, texts)
    first = _ray_run(db, functools.partial(TextKeyedBackend, answers, silent))
    assert (first.ok, first.left_pending, first.outcome) == (10, 2, "left_pending")
    assert exit_code(first.summary()) == 4
    second = _ray_run(db, functools.partial(TextKeyedBackend, answers))
    assert (second.pending, second.ok) == (2, 2)
    with Store(db, read_only=True) as s:
        per_run = s.query("SELECT run_id, count(*) AS n FROM extractions GROUP BY run_id ORDER BY n").to_pylist()
    assert [r["n"] for r in per_run] == [2, 10] and per_run[0]["run_id"] == second.run_id


DRIVER = """
import functools, sys
sys.path[:0] = [{here!r}, {repo!r}]
from llm_fakes import TextKeyedBackend
from extract.backends.base import SamplingConfig
from extract.engine import EngineConfig
from extract.prompting import load_prompt
from extract.ray_engine import RayConfig, run_ray_extraction
from extract.store import Store
import json
answers = json.loads(open({answers!r}).read())
with Store({db!r}) as store:
    run_ray_extraction(store, functools.partial(TextKeyedBackend, answers, delay_s=0.05, max_concurrency=1),
                       load_prompt(), SamplingConfig(), EngineConfig(progress=False),
                       RayConfig(workers=1, cpus_per_worker=0.5, block_reports=4, load_every_s=3600))
"""


def test_a_killed_driver_resumes_from_the_shards_its_workers_wrote(tmp_path):
    texts = _texts(60)
    answers = _answers(texts)
    db = tmp_path / "s.duckdb"
    with Store(db) as s:
        add_reports(s, texts)
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    script = DRIVER.format(here=str(HERE), repo=str(REPO), answers=str(tmp_path / "answers.json"), db=str(db))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
    driver = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root = tmp_path / "s.duckdb.shards"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(finished_shards(root)) < 2 and driver.poll() is None:
        time.sleep(0.2)
    assert driver.poll() is None, driver.stderr.read()
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local cluster it started, at once
    driver.wait(30)
    written = len(finished_shards(root))
    assert 2 <= written < 60 // 4
    with Store(db, read_only=True) as s:  # the merge every hour never came: the rows are only in the shards
        assert s.query("SELECT count(*) AS n FROM extractions").to_pylist() == [{"n": 0}]

    stats = _ray_run(db, functools.partial(TextKeyedBackend, answers))
    with Store(db, read_only=True) as s:
        per_run = {r["run_id"]: r["n"] for r in
                   s.query("SELECT run_id, count(*) AS n FROM extractions GROUP BY run_id").to_pylist()}
        runs = s.query("SELECT run_id, outcome FROM extraction_runs ORDER BY started_at").to_pylist()
        distinct = s.query("SELECT count(DISTINCT report_id) AS n, count(*) AS rows FROM extractions").to_pylist()
    assert distinct == [{"n": 60, "rows": 60}]  # every report once: none lost, none twice
    assert [r["outcome"] for r in runs] == ["killed", "done"] and stats.killed_runs == [runs[0]["run_id"]]
    killed_rows = per_run[runs[0]["run_id"]]
    assert killed_rows >= 2 * 4 - 2 and stats.pending == 60 - killed_rows  # resumed: only the rest was sent


def test_cli_runs_on_ray_behind_an_openai_compatible_server(tmp_path):
    from typer.testing import CliRunner

    from rsuper.cli import app

    texts = _texts(9)
    db = tmp_path / "s.duckdb"
    with Store(db) as s:
        add_reports(s, texts)
    with FakeLLMServer(answers=_answers(texts)) as server:
        result = CliRunner().invoke(app, [
            "extract", "--db", str(db), "--engine", "ray", "--backend", "openai", "--llm-url", server.url,
            "--ray-workers", "2", "--ray-cpus-per-worker", "0.5", "--block-reports", "3", "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["pending"], summary["ok"], summary["outcome"]) == (9, 9, "done")
    with Store(db, read_only=True) as s:
        assert s.query("SELECT backend, model_id FROM extraction_runs").to_pylist() == [
            {"backend": "ray+openai", "model_id": "fake-model"}]
        assert s.query("SELECT count(*) AS n FROM tumors").to_pylist() == [{"n": 6}]


def test_inputs_are_one_file_per_block_of_distinct_texts(tmp_path):
    from extract.engine import config_hash
    from extract.ray_engine import _write_inputs

    texts = _texts(40)  # 32 distinct texts
    with Store(tmp_path / "s.duckdb") as s:
        add_reports(s, texts)
        n = _write_inputs(s, config_hash({"k": 1}), None, tmp_path / "in", texts_per_file=7)
    files = sorted((tmp_path / "in").glob("*.parquet"))
    tables = [pq.read_table(f) for f in files]
    assert n == 40 and [t.num_rows for t in tables] == [7, 7, 7, 7, 4]
    rows = [r for t in tables for r in t.to_pylist()]
    assert sorted(i for r in rows for i in r["report_ids"]) == sorted(texts)
    assert [r["report_ids"][0] for r in rows] == sorted(r["report_ids"][0] for r in rows)  # report order kept
    assert all(texts[i] == r["text"] for r in rows for i in r["report_ids"])
    assert sum(len(r["report_ids"]) > 1 for r in rows) == 8  # every fifth id shares the text before it


def test_a_run_whose_blocks_all_go_unanswered_stops_at_the_outage_limit(tmp_path):
    texts = _texts(40)
    db = tmp_path / "s.duckdb"
    with Store(db) as s:
        add_reports(s, texts)
    dead = functools.partial(TextKeyedBackend, _answers(texts), frozenset(texts.values()))
    with Store(db) as store:
        stats = run_ray_extraction(store, dead, load_prompt(), SamplingConfig(),
                                   EngineConfig(progress=False, outage_s=0.001),
                                   RayConfig(workers=2, cpus_per_worker=0.5, block_reports=7))
    assert stats.outage is not None and "no block answered" in stats.outage
    assert (stats.done, stats.left_pending, exit_code(stats.summary())) == (0, 40, 4)
    with Store(db, read_only=True) as s:
        assert s.query("SELECT outcome, n_left_pending FROM extraction_runs").to_pylist() == [
            {"outcome": "outage", "n_left_pending": 40}]
    resumed = _ray_run(db, functools.partial(TextKeyedBackend, _answers(texts)))
    assert (resumed.pending, resumed.ok, resumed.outcome) == (40, 40, "done")
