"""Engine: run keys, validation and repair, storage, idempotence, shared texts, fault-injected runs."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from extract.answers import parse_stored_answer
from extract.backends.base import BackendError, BackendInfo, Completion, SamplingConfig, TransportError
from extract.backends.openai import OpenAIBackend, OpenAIConfig
from extract.engine import (
    AnswerError,
    EngineConfig,
    config_hash,
    exit_code,
    extract_one,
    extraction_key,
    parse_answer,
    pending_reports,
    run_config,
    run_extraction,
)
from extract.prompting import load_prompt, shared_prefix_chars
from extract.reading.sentences import numbered_report
from fake_server import Action, FakeLLMServer
from llm_fakes import ANSWERS, KIDNEY_REPORT, LIVER_REPORT, NORMAL_REPORT, ScriptedBackend, add_reports, cited
from schemas.llm import CitedAnswer, llm_json_schema

PROMPT = load_prompt()
SCHEMA = llm_json_schema(CitedAnswer)
QUIET = EngineConfig(progress=False)


def run(coro):
    return asyncio.run(coro)


# -- keys --------------------------------------------------------------------------------------------


def test_config_hash_changes_with_every_part_of_the_run_key():
    info = BackendInfo(backend="x", backend_version="1", model_id="m", model_revision="r", quantization="q")
    base = config_hash(run_config(PROMPT, info, SamplingConfig()))
    variants = [
        run_config(PROMPT, BackendInfo(backend="x", backend_version="1", model_id="m2", model_revision="r",
                                       quantization="q"), SamplingConfig()),
        run_config(PROMPT, BackendInfo(backend="x", backend_version="1", model_id="m", model_revision="r2",
                                       quantization="q"), SamplingConfig()),
        run_config(PROMPT, info, SamplingConfig(max_tokens=512)),
        run_config(PROMPT, info, SamplingConfig(temperature=0.7)),
        {**run_config(PROMPT, info, SamplingConfig()), "prompt_sha256": "0" * 64},
        {**run_config(PROMPT, info, SamplingConfig()), "schema_version": "9.9.9"},
        run_config(PROMPT, BackendInfo(backend="x", backend_version="1", model_id="m", model_revision="r",
                                       quantization="q", decoding={"prompt_lookup_tokens": 8}), SamplingConfig()),
    ]
    hashes = {config_hash(v) for v in variants}
    assert base not in hashes and len(hashes) == len(variants)
    # the backend itself is not part of the key: the same model served another way gives the same answers
    other = BackendInfo(backend="y", backend_version="2", model_id="m", model_revision="r", quantization="q")
    assert config_hash(run_config(PROMPT, other, SamplingConfig())) == base


def test_an_organ_table_extension_is_part_of_the_run_key(monkeypatch):
    """Code reads the cited sentences with the vocabulary's words; the shipped one keeps the keys they had."""
    import extract.engine as engine

    info = BackendInfo(backend="x", backend_version="1", model_id="m")
    assert "vocabulary_sha256" not in run_config(PROMPT, info, SamplingConfig())
    monkeypatch.setattr(engine, "EXTENSION_FILES", (Path("appendix.yaml"),))
    monkeypatch.setattr(engine, "VOCABULARY_SHA256", "a" * 64)
    assert run_config(PROMPT, info, SamplingConfig())["vocabulary_sha256"] == "a" * 64
    # no decoding settings: the key of runs made before the field existed
    assert "decoding" not in run_config(PROMPT, info, SamplingConfig())


def test_extraction_key_depends_on_id_text_and_config():
    k = extraction_key("a", "s" * 64, "c" * 64)
    assert len(k) == 64
    assert k != extraction_key("b", "s" * 64, "c" * 64)
    assert k != extraction_key("a", "t" * 64, "c" * 64)
    assert k != extraction_key("a", "s" * 64, "d" * 64)


# -- prompt ------------------------------------------------------------------------------------------


def test_prompt_prefix_is_fixed_and_report_is_last():
    a, b = PROMPT.messages(LIVER_REPORT), PROMPT.messages(KIDNEY_REPORT)
    assert a[:-1] == b[:-1] and a[-1]["content"].endswith(numbered_report(LIVER_REPORT))
    assert a[-1]["content"].endswith("[1] Liver: 2.2 cm hypodense lesion in segment 8, likely a hemangioma. [2] Spleen: Normal.")
    assert a[0]["role"] == "system" and [m["role"] for m in a[1:-1]] == ["user", "assistant"] * 3
    fixed, total = shared_prefix_chars(PROMPT, LIVER_REPORT)
    assert fixed / total > 0.9


def test_a_template_names_its_answer_format_and_examples_are_checked_against_it(tmp_path):
    from extract.prompting import PromptError

    base = 'id: t\nversion: 1\nrepair: "{errors}"\nsystem: s\n'
    example = ('examples:\n  - report: "Liver: 9 mm cyst."\n'
               '    answer: {lesions: [{organ: liver, sentences: [%d], count: 1, count_exact: true}], normal: [], '
               'resected: []}\n')
    (tmp_path / "cite.yaml").write_text(base + "answer_format: cite\n" + example % 1)
    prompt = load_prompt(tmp_path / "cite.yaml")
    assert prompt.answer_format == "cite" and prompt.answer_schema()["title"] == "CitedAnswer"
    assert prompt.prefix[1]["content"] == "Report:\n[1] Liver: 9 mm cyst."
    (tmp_path / "quote.yaml").write_text(base + example % 1)  # no answer_format: the quoting schema
    with pytest.raises(PromptError, match="example 1 is not a valid answer"):
        load_prompt(tmp_path / "quote.yaml")
    (tmp_path / "odd.yaml").write_text(base + "answer_format: prose\nexamples: []\n")
    with pytest.raises(PromptError, match="answer_format must be one of"):
        load_prompt(tmp_path / "odd.yaml")


def test_repair_turn_carries_the_first_answer_and_errors():
    msgs = PROMPT.repair_messages(LIVER_REPORT, "{bad", "organs: field required")
    assert msgs[-2] == {"role": "assistant", "content": "{bad"}
    assert "organs: field required" in msgs[-1]["content"] and msgs[-1]["role"] == "user"


# -- parsing and one report -----------------------------------------------------------------------------


def test_parse_answer_converts_sizes_in_code():
    payload, warnings = parse_answer(ANSWERS[LIVER_REPORT], LIVER_REPORT)
    (tumor,) = payload.tumors
    assert tumor.size.diameters_mm == [22.0] and tumor.segments[0].value == "liver_segment_8"
    assert warnings == []


@pytest.mark.parametrize("text,needle", [
    ("{not json", "does not match the schema"),
    (json.dumps({"lesions": [cited(count=0)], "normal": [], "resected": []}), "count"),
    (json.dumps({"lesions": [cited(sentences=[0])], "normal": [], "resected": []}), "sentences"),
    (json.dumps({"lesions": [cited()], "normal": [], "resected": []}), "breaks a rule: .*400"),
])
def test_parse_answer_rejects_unusable_answers(text, needle):
    with pytest.raises(AnswerError, match=needle):
        parse_answer(text, "Liver: a 45 cm liver mass. " + LIVER_REPORT)


def test_a_stored_answer_is_read_in_the_format_it_is_written_in():
    quoting = json.dumps({"organs": [], "lesions": [{
        "organ": "liver", "quote": "2.2 cm hypodense lesion in segment 8", "side": "none", "location": "segment 8",
        "size": "2.2 cm", "size_bound": "none", "count": 1, "count_exact": True, "attenuation": "hypo",
        "kind": "hemangioma", "certainty": "definite"}]})
    for text in (ANSWERS[LIVER_REPORT], quoting):
        (tumor,) = parse_stored_answer(text, LIVER_REPORT)[0].tumors
        assert tumor.size.diameters_mm == [22.0] and tumor.segments[0].value == "liver_segment_8"
    with pytest.raises(AnswerError, match="does not match the schema: lesions: Field required"):
        parse_stored_answer(json.dumps({"organs": []}), LIVER_REPORT)  # neither format: the citing one's error


def test_happy_path_is_one_call():
    backend = ScriptedBackend([ANSWERS[LIVER_REPORT]])
    out = run(extract_one(backend, PROMPT, SCHEMA, SamplingConfig(), LIVER_REPORT))
    assert (out.status, out.attempts, out.calls, len(backend.calls)) == ("ok", 1, 1, 1)
    assert out.prompt_tokens == 100 and out.output_tokens == 20


def test_invalid_then_valid_is_repaired_with_errors_sent_back():
    backend = ScriptedBackend(['{"organs": []}', ANSWERS[LIVER_REPORT]])
    out = run(extract_one(backend, PROMPT, SCHEMA, SamplingConfig(), LIVER_REPORT))
    assert (out.status, out.attempts, out.calls) == ("repaired", 2, 2)
    repair_turn = backend.calls[1][-1]["content"]
    assert "lesions" in repair_turn and backend.calls[1][-2]["content"] == '{"organs": []}'
    assert out.payload is not None and len(out.payload.tumors) == 1


def test_invalid_twice_fails_and_keeps_both_errors():
    backend = ScriptedBackend(["{", "[]"])
    out = run(extract_one(backend, PROMPT, SCHEMA, SamplingConfig(), LIVER_REPORT))
    assert (out.status, out.attempts, out.payload) == ("failed", 2, None)
    assert "attempt 1" in out.error and "attempt 2" in out.error and out.raw_output == "[]"


def test_length_finish_is_a_failure_without_repair():
    trunc = Completion(text='{"organs": [', finish_reason="length", prompt_tokens=5, output_tokens=64)
    backend = ScriptedBackend([trunc, ANSWERS[LIVER_REPORT]])
    out = run(extract_one(backend, PROMPT, SCHEMA, SamplingConfig(max_tokens=64), LIVER_REPORT))
    assert out.status == "failed" and "max_tokens=64" in out.error and len(backend.calls) == 1


def test_transport_failure_is_a_failure():
    backend = ScriptedBackend([BackendError("connection refused")])
    out = run(extract_one(backend, PROMPT, SCHEMA, SamplingConfig(), LIVER_REPORT))
    assert out.status == "failed" and out.error.startswith("transport:")


def test_no_answer_from_the_server_leaves_the_report_pending():
    backend = ScriptedBackend([TransportError("http://x/v1: gave up after 3 tries: HTTP 503")])
    out = run(extract_one(backend, PROMPT, SCHEMA, SamplingConfig(), LIVER_REPORT))
    assert out.status == "pending" and out.error.startswith("transport:") and out.payload is None


def test_an_outage_stops_the_run_and_leaves_the_rest_pending(store):
    add_reports(store, {f"r{i}": f"Liver: {i + 1} mm cyst." for i in range(6)})
    backend = ScriptedBackend([TransportError("http://x/v1: connection refused")] * 6, max_concurrency=1)
    stats = run(run_extraction(store, backend, PROMPT, SamplingConfig(),
                               EngineConfig(progress=False, outage_s=1e-9)))
    assert len(backend.calls) == 1  # stopped at the first unanswered call, the queue untouched
    assert (stats.left_pending, stats.ok, stats.failed) == (6, 0, 0)
    assert stats.outage.startswith("no answer for ") and "connection refused" in stats.outage
    assert store.query("SELECT count(*) AS n FROM extractions").column("n")[0].as_py() == 0
    summary = stats.summary()
    # Nothing was answered: per-report figures are unknown, not 0.0; the unanswered call is counted.
    assert (summary["outcome"], summary["calls_per_report"], summary["output_tokens_per_report"],
            summary["unanswered_calls"], exit_code(summary)) == ("outage", None, None, 1, 4)
    assert store.query("SELECT outcome, n_left_pending FROM extraction_runs").to_pylist() == [
        {"outcome": "outage", "n_left_pending": 6}]
    again = ScriptedBackend([ANSWERS[LIVER_REPORT]] * 6, max_concurrency=1)
    rerun = run(run_extraction(store, again, PROMPT, SamplingConfig(), QUIET))
    assert rerun.pending == 6 and rerun.left_pending == 0 and rerun.outage is None


def test_overlong_report_fails_without_a_call():
    backend = ScriptedBackend([])
    out = run(extract_one(backend, PROMPT, SCHEMA, SamplingConfig(), "x" * 500, max_report_chars=100))
    assert out.status == "failed" and backend.calls == []
    assert out.error == "report has 500 characters, over the 100 limit (--max-report-chars; then --retry-failed)"


# -- the writer ------------------------------------------------------------------------------------------


class _RecordingStore:
    """Stands in for `Store` in the writer: keeps the size and time of each write."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, float]] = []

    def write_extractions(self, extractions, tumors, findings):
        import time

        from extract.store.store import WriteStats

        self.writes.append((extractions.num_rows, time.monotonic()))
        return WriteStats(written=extractions.num_rows, skipped=0)

    def release(self) -> None:
        pass


def _ok_outcome(i: int):
    from extract.engine import Job, Outcome

    payload, _ = parse_answer(ANSWERS[LIVER_REPORT], LIVER_REPORT, PROMPT.answer_model)
    return Job(f"r{i:04d}", 1, f"sha{i}", LIVER_REPORT), Outcome("ok", 1, payload=payload)


def test_writer_fills_batches_at_high_rates_and_writes_a_lone_result_within_its_wait():
    import time

    from extract.engine import ResultWriter

    async def go(rate_results: int, pause_s: float, batch: int, wait_s: float) -> tuple[list, float]:
        store = _RecordingStore()
        writer = ResultWriter(store, "run", "cfg", batch=batch, interval_s=0.01, wait_s=wait_s)
        task = asyncio.create_task(writer.run())
        t0 = time.monotonic()
        for i in range(rate_results):
            writer.add(*_ok_outcome(i))
            await asyncio.sleep(pause_s)
        while sum(n for n, _ in store.writes) < rate_results:
            await asyncio.sleep(0.01)
        writer.close()
        await task
        return store.writes, t0

    # 300 results over ~0.3 s, batches of 100, up to 5 s of wait: full batches only, never a partial one
    writes, _ = asyncio.run(go(300, 0.001, batch=100, wait_s=5.0))
    assert [n for n, _ in writes] == [100, 100, 100]
    # one result, nothing else arrives: written after about wait_s, not before and not much later
    writes, t0 = asyncio.run(go(1, 0.0, batch=100, wait_s=0.3))
    assert [n for n, _ in writes] == [1] and 0.28 <= writes[0][1] - t0 < 1.0
    # no wait: written at once, as before
    writes, t0 = asyncio.run(go(1, 0.0, batch=100, wait_s=0.0))
    assert writes[0][1] - t0 < 0.2


# -- runs against a store --------------------------------------------------------------------------------


def test_run_stores_every_report_and_rerun_calls_nothing(store):
    texts = {"r1": LIVER_REPORT, "r2": KIDNEY_REPORT, "r3": NORMAL_REPORT, "r4": "Unreadable report."}
    add_reports(store, texts)
    script = [ANSWERS[LIVER_REPORT], ANSWERS[KIDNEY_REPORT], ANSWERS[NORMAL_REPORT], "{", "{"]
    backend = ScriptedBackend(script, max_concurrency=1)  # one at a time: the script follows report order
    stats = run(run_extraction(store, backend, PROMPT, SamplingConfig(), QUIET))
    assert (stats.ok, stats.repaired, stats.failed, stats.calls) == (3, 0, 1, 5)
    rows = store.query("SELECT report_id, status, attempts FROM extractions ORDER BY report_id").to_pylist()
    assert [(r["report_id"], r["status"], r["attempts"]) for r in rows] == [
        ("r1", "ok", 1), ("r2", "ok", 1), ("r3", "ok", 1), ("r4", "failed", 2)]
    summary = {(r["report_id"], r["organ"]): r for r in store.query("SELECT * FROM organ_summary").to_pylist()}
    assert summary[("r1", "liver")]["largest_diameter_mm"] == 22.0
    assert summary[("r2", "kidney")]["sides"] == ["left"] and summary[("r3", "pancreas")]["state"] == "no_lesion"
    run_row = store.query("SELECT * FROM extraction_runs").to_pylist()[0]
    assert (run_row["n_ok"], run_row["n_failed"], run_row["model_id"]) == (3, 1, "scripted")
    assert run_row["prompt_sha256"] == PROMPT.sha256 and run_row["finished_at"] is not None
    assert (run_row["outcome"], exit_code(stats.summary())) == ("failed_reports", 3)

    again = ScriptedBackend([])
    stats2 = run(run_extraction(store, again, PROMPT, SamplingConfig(), QUIET))
    assert stats2.pending == 0 and again.calls == []
    # Nothing left to do, but r4's stored result is failed: a scheduler still sees exit 3.
    assert (stats2.failed, stats2.failed_in_store, exit_code(stats2.summary())) == (0, 1, 3)
    # a failed report is re-extracted only on request
    retry = ScriptedBackend([ANSWERS[NORMAL_REPORT].replace("Liver: No focal lesion.", "Unreadable report.")])
    stats3 = run(run_extraction(store, retry, PROMPT, SamplingConfig(), EngineConfig(progress=False, retry_failed=True)))
    assert stats3.pending == 1 and len(retry.calls) == 1
    assert store.query("SELECT count(*) AS n FROM extractions").column("n")[0].as_py() == 4
    # The failure it replaced stays on record, stamped with the retrying run.
    history = store.query("SELECT report_id, attempts, retried_by_run FROM extraction_failures").to_pylist()
    assert history == [{"report_id": "r4", "attempts": 2, "retried_by_run": stats3.run_id}]
    assert store.query("SELECT status FROM extractions WHERE report_id = 'r4'").column(0).to_pylist() == ["ok"]
    assert (stats3.failed_in_store, exit_code(stats3.summary())) == (0, 0)


def test_new_sampling_is_a_new_key(store):
    add_reports(store, {"r1": NORMAL_REPORT})
    run(run_extraction(store, ScriptedBackend([ANSWERS[NORMAL_REPORT]]), PROMPT, SamplingConfig(), QUIET))
    second = ScriptedBackend([ANSWERS[NORMAL_REPORT]])
    run(run_extraction(store, second, PROMPT, SamplingConfig(max_tokens=512), QUIET))
    assert len(second.calls) == 1
    assert store.query("SELECT count(DISTINCT config_hash) AS n FROM extractions").column("n")[0].as_py() == 2


def test_ids_sharing_a_text_share_one_call(store):
    add_reports(store, {"a": NORMAL_REPORT, "b": NORMAL_REPORT, "c": LIVER_REPORT})
    backend = ScriptedBackend([ANSWERS[NORMAL_REPORT], ANSWERS[LIVER_REPORT]], max_concurrency=1)
    stats = run(run_extraction(store, backend, PROMPT, SamplingConfig(), QUIET))
    assert len(backend.calls) == 2 and stats.ok == 3
    assert store.query("SELECT count(*) AS n FROM organ_summary WHERE organ = 'liver'").column("n")[0].as_py() == 3


def test_progress_off_a_terminal_is_plain_lines_with_counts_and_no_report_text(store, capsys):
    add_reports(store, {"r1": LIVER_REPORT, "r2": KIDNEY_REPORT})
    backend = ScriptedBackend([ANSWERS[LIVER_REPORT], ANSWERS[KIDNEY_REPORT]], max_concurrency=1)
    run(run_extraction(store, backend, PROMPT, SamplingConfig(), EngineConfig(progress_interval_s=3600)))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "extract: 0/2 reports"
    assert lines[-1].startswith("extract: 2/2 reports (100%), ") and lines[-1].endswith(" elapsed")
    assert len(lines) == 2  # nothing between: the interval has not passed
    assert not any("liver" in line.lower() or "kidney" in line.lower() for line in lines)


def test_limit_takes_the_first_pending_reports(store):
    add_reports(store, {"r1": LIVER_REPORT, "r2": KIDNEY_REPORT})
    run(run_extraction(store, ScriptedBackend([ANSWERS[LIVER_REPORT]]), PROMPT, SamplingConfig(),
                       EngineConfig(progress=False, limit=1)))
    info = BackendInfo(backend="scripted", backend_version="0", model_id="scripted")
    cfg = config_hash(run_config(PROMPT, info, SamplingConfig()))
    assert [j.report_id for j in pending_reports(store, cfg)] == ["r2"]


def test_faulty_server_run_ends_with_every_report_stored(store):
    """500s, truncated bodies, dropped connections, length cut-offs, garbage and slow answers: no crash, no loss."""
    texts = {f"r{i:02d}": f"Liver: {i + 1} mm hypodense focus number {i}." for i in range(30)}
    add_reports(store, texts)
    rng = random.Random(7)
    faults = [Action("status", status=500), Action("truncated"), Action("drop"),
              Action(content='{"organs": [', finish_reason="length"), Action(content="not json"),
              Action(delay_s=0.3), Action()]

    def respond(i: int, body: dict) -> Action:
        return rng.choice(faults)

    with FakeLLMServer(respond=respond) as server:
        backend = OpenAIBackend(OpenAIConfig(urls=[server.url], retries=2, backoff_s=0.01, timeout_s=0.2,
                                             concurrency=8))
        # Transport faults past the retries leave a report pending: reruns pick up exactly those.
        runs = [run(run_extraction(store, backend, PROMPT, SamplingConfig(), QUIET))]
        while runs[-1].left_pending and len(runs) < 10:
            runs.append(run(run_extraction(store, backend, PROMPT, SamplingConfig(), QUIET)))
    assert runs[-1].left_pending == 0
    assert [r.pending for r in runs[1:]] == [r.left_pending for r in runs[:-1]]
    rows = store.query("SELECT report_id, status, error FROM extractions").to_pylist()
    assert sorted(r["report_id"] for r in rows) == sorted(texts)  # each exactly once
    assert sum(r.ok + r.repaired + r.failed for r in runs) == 30
    assert sum(r.failed for r in runs) > 0 and sum(r.ok for r in runs) > 0
    assert all(r["error"] for r in rows if r["status"] == "failed")
    assert not any(r["error"].startswith("transport") for r in rows if r["status"] == "failed")
    usable = {r["report_id"] for r in rows if r["status"] != "failed"}
    findings = store.query("SELECT report_id, count(*) AS n FROM organ_findings GROUP BY report_id").to_pylist()
    assert {r["report_id"] for r in findings} == usable and all(r["n"] == 18 for r in findings)
