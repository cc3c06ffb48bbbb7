"""Resume: SIGKILL a real `rsuper extract` process midway, run it again, every report is done exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from extract.store import Store
from fake_server import Action, FakeLLMServer, report_of
from llm_fakes import add_reports

REPO = Path(__file__).resolve().parents[2]
N_REPORTS = 40
CONCURRENCY = 3


def _extract(db: Path, url: str) -> subprocess.Popen:
    env = {**os.environ, "RSUPER_DB": str(db)}
    return subprocess.Popen(
        [sys.executable, "-m", "rsuper", "extract", "--backend", "openai", "--llm-url", url,
         "--concurrency", str(CONCURRENCY), "--retries", "0", "--no-progress", "--json"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_midway_then_rerun_does_each_report_once(tmp_path):
    db = tmp_path / "resume.duckdb"
    texts = {f"acc{i:03d}": f"Liver: {i + 2} mm hypodense focus, report number {i}." for i in range(N_REPORTS)}
    id_of = {t: rid for rid, t in texts.items()}
    with Store(db) as store:
        add_reports(store, texts)

    with FakeLLMServer(respond=lambda i, body: Action(delay_s=0.3)) as server:
        proc = _extract(db, server.url)
        deadline = time.monotonic() + 60
        while len(server.requests) < 18 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        first = [id_of[report_of(b)] for b in server.requests]

        with Store(db, read_only=True) as store:
            stored_after_kill = set(store.query("SELECT report_id FROM extractions").column("report_id").to_pylist())
            n_tumor_keys = store.query("SELECT count(DISTINCT extraction_key) AS n FROM organ_findings").column("n")[0]
        assert 0 < len(stored_after_kill) < N_REPORTS
        assert n_tumor_keys.as_py() == len(stored_after_kill)  # no extraction without its organ rows, or vice versa

        proc = _extract(db, server.url)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        second = [id_of[report_of(b)] for b in server.requests[len(first):]]

    assert not stored_after_kill & set(second)  # nothing stored was asked again
    # Lost work: the calls in flight at the kill and the answers that arrived during the last write, all recent.
    lost = set(first) - stored_after_kill
    assert lost <= set(first[-5 * CONCURRENCY:]) and set(second) == set(texts) - stored_after_kill
    with Store(db, read_only=True) as store:
        rows = store.query("SELECT report_id, status FROM extractions").to_pylist()
        per_report = store.query("SELECT report_id, count(*) AS n FROM organ_findings GROUP BY report_id").to_pylist()
    counts = Counter(r["report_id"] for r in rows)
    assert set(counts) == set(texts) and set(counts.values()) == {1}
    assert all(r["status"] == "ok" for r in rows)
    assert {r["report_id"] for r in per_report} == set(texts) and {r["n"] for r in per_report} == {18}
    # The rerun closed the killed run's row with what that run had stored.
    with Store(db, read_only=True) as store:
        runs = store.query("SELECT outcome, n_ok, finished_at IS NOT NULL AS finished FROM extraction_runs "
                           "ORDER BY started_at").to_pylist()
    assert runs == [{"outcome": "killed", "n_ok": len(stored_after_kill), "finished": True},
                    {"outcome": "done", "n_ok": N_REPORTS - len(stored_after_kill), "finished": True}]
    assert len(json.loads(out)["killed_runs"]) == 1


def _rsuper(db: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rsuper", *args], cwd=REPO, env={**os.environ, "RSUPER_DB": str(db)},
                          capture_output=True, text=True, timeout=120)


def test_query_export_and_ingest_work_during_an_extraction_and_a_second_extraction_is_refused(tmp_path):
    db = tmp_path / "busy.duckdb"
    with Store(db) as store:
        add_reports(store, {f"acc{i:03d}": f"Liver: {i + 2} mm cyst, report {i}." for i in range(45)})
    dump = tmp_path / "more.csv"
    dump.write_text("id,text\nnew1,Spleen: normal.\n")
    with FakeLLMServer(respond=lambda i, body: Action(delay_s=0.8)) as server:  # 12 s in all
        proc = _extract(db, server.url)
        deadline = time.monotonic() + 60
        while len(server.requests) < 2 * CONCURRENCY and time.monotonic() < deadline:
            time.sleep(0.02)
        query = _rsuper(db, "query", "SELECT count(*) AS n FROM reports", "--format", "csv")
        ingest = _rsuper(db, "ingest", str(dump))
        export = _rsuper(db, "export", str(tmp_path / "summary.jsonl"), "--format", "organ-summary-jsonl")
        second = _rsuper(db, "extract", "--backend", "openai", "--llm-url", server.url, "--no-progress")
        still_running = proc.poll() is None
        out, err = proc.communicate(timeout=120)
    assert still_running, "the extraction ended before the readers ran; slow the server down"
    assert query.returncode == 0 and query.stdout.splitlines() == ["n", "45"], query.stderr
    assert ingest.returncode == 0 and "1 new" in ingest.stdout, ingest.stderr
    assert export.returncode == 0, export.stderr
    assert second.returncode != 0 and "another `rsuper extract` is running on this store" in second.stderr
    assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert proc.returncode == 0, err[-2000:]
    with Store(db, read_only=True) as store:
        done = store.query("SELECT count(*) AS n FROM extractions").column("n")[0].as_py()
    assert done == 45  # the report ingested meanwhile waits for the next run


def test_a_server_that_never_answers_stops_the_run_with_exit_4_and_leaves_every_report_pending(tmp_path):
    db = tmp_path / "outage.duckdb"
    with Store(db) as store:
        add_reports(store, {f"acc{i}": f"Liver: {i + 2} mm cyst, report {i}." for i in range(20)})
    with FakeLLMServer(respond=lambda i, body: Action("status", status=503)) as server:
        env = {**os.environ, "RSUPER_DB": str(db)}
        proc = subprocess.run(
            [sys.executable, "-m", "rsuper", "extract", "--backend", "openai", "--llm-url", server.url,
             "--model", "m", "--concurrency", "2", "--retries", "1", "--outage-s", "0.5", "--no-progress"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "reports left pending (stopped: no answer for" in proc.stderr and "HTTP 503" in proc.stderr
    assert "Traceback" not in proc.stderr
    with Store(db, read_only=True) as store:
        assert store.query("SELECT count(*) AS n FROM extractions").column("n")[0].as_py() == 0
