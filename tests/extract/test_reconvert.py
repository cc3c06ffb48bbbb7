"""Stored answers converted again when the conversion rules change: by `rsuper extract` first, or by
`rsuper reconvert`; no LLM call, one transaction per batch, answers the rules in force reject become failed."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

import extract.engine as engine
import extract.reconvert as reconvert
from extract.answers import CONVERSION_SHA256, AnswerError, parse_answer, parse_stored_answer
from extract.backends.base import SamplingConfig
from extract.engine import EngineConfig, run_extraction
from extract.prompting import load_prompt
from extract.reconvert import reconvert_store
from extract.store import Store
from extract.store import tables
from llm_fakes import ANSWERS, KIDNEY_REPORT, LIVER_REPORT, NORMAL_REPORT, ScriptedBackend, add_reports

PROMPT = load_prompt()
QUIET = EngineConfig(progress=False)
OLD_RULES = "0" * 64
NOTHING = json.dumps({"lesions": [], "normal": [], "resected": []})


def _extract_with_older_rules(store, monkeypatch, texts):
    """Extract `texts` as an rsuper whose rules found nothing in any report, stamped with another digest (the
    rules in force find lesions from the text alone, so the older ones convert another text)."""
    add_reports(store, texts)
    monkeypatch.setattr(engine, "CONVERSION_SHA256", OLD_RULES)
    monkeypatch.setattr(engine, "parse_answer", lambda raw, text, model: parse_answer(NOTHING, "No findings.", model))
    backend = ScriptedBackend([ANSWERS[t] for t in texts.values()], max_concurrency=1)
    asyncio.run(run_extraction(store, backend, PROMPT, SamplingConfig(), QUIET))
    monkeypatch.undo()


def _summary(store, report_id, organ):
    return store.query(f"SELECT * FROM organ_summary WHERE report_id = '{report_id}' AND organ = '{organ}'"
                       ).to_pylist()


def test_a_run_converts_answers_stored_by_other_rules_again_and_calls_no_llm(store, monkeypatch):
    _extract_with_older_rules(store, monkeypatch, {"r1": LIVER_REPORT, "r2": KIDNEY_REPORT})
    assert _summary(store, "r1", "liver")[0]["state"] == "not_mentioned"
    assert store.query("SELECT count(*) FROM tumors").column(0)[0].as_py() == 0

    backend = ScriptedBackend([])
    stats = asyncio.run(run_extraction(store, backend, PROMPT, SamplingConfig(), QUIET))
    assert backend.calls == [] and stats.pending == 0
    assert stats.summary()["reconverted"] == 2 and stats.summary()["reconvert_changed"] == 2
    liver = _summary(store, "r1", "liver")[0]
    assert (liver["state"], liver["largest_diameter_mm"], liver["largest_location"]) == ("lesion", 22.0, "segment_8")
    assert _summary(store, "r2", "kidney")[0]["sides"] == ["left"]
    assert _summary(store, "r2", "pancreas")[0]["state"] == "no_lesion"
    rows = store.query("SELECT status, conversion_sha256, is_current FROM extractions").to_pylist()
    assert rows == [{"status": "ok", "conversion_sha256": CONVERSION_SHA256, "is_current": True}] * 2
    assert store.query("SELECT count(*) FROM tumors").column(0)[0].as_py() == 2
    # each extraction keeps exactly one current row per organ key
    per_key = store.query("SELECT extraction_key, count(*) AS n, count(DISTINCT organ) AS k FROM organ_findings "
                          "WHERE is_current GROUP BY ALL").to_pylist()
    assert len(per_key) == 2 and all(r["n"] == r["k"] == len(tables.ORGANS) for r in per_key)

    again = asyncio.run(run_extraction(store, ScriptedBackend([]), PROMPT, SamplingConfig(), QUIET))
    assert again.summary()["reconverted"] == 0


def test_no_reconvert_leaves_the_stored_rows(store, monkeypatch):
    _extract_with_older_rules(store, monkeypatch, {"r1": LIVER_REPORT})
    stats = asyncio.run(run_extraction(store, ScriptedBackend([]), PROMPT, SamplingConfig(),
                                       EngineConfig(progress=False, reconvert=False)))
    assert stats.summary()["reconverted"] == 0
    assert _summary(store, "r1", "liver")[0]["state"] == "not_mentioned"
    assert store.count_stale_conversions(CONVERSION_SHA256) == 1


def test_an_answer_the_rules_in_force_reject_becomes_failed_and_its_raw_answer_stays(store, monkeypatch):
    _extract_with_older_rules(store, monkeypatch, {"r1": LIVER_REPORT, "r2": NORMAL_REPORT})

    def reject_liver(raw, text):
        if text == LIVER_REPORT:
            raise AnswerError("the answer breaks a rule: scripted")
        return parse_stored_answer(raw, text)

    monkeypatch.setattr(reconvert, "parse_stored_answer", reject_liver)
    stats = reconvert_store(store, progress=False, batch=1)  # one extraction per transaction
    assert (stats.checked, stats.changed, stats.failed) == (2, 2, 1)
    r1 = store.query("SELECT status, error, raw_output, payload, is_current FROM extractions "
                     "WHERE report_id = 'r1'").to_pylist()[0]
    assert r1["status"] == "failed" and r1["error"].startswith(f"conversion {CONVERSION_SHA256[:12]}: ")
    assert r1["raw_output"] == ANSWERS[LIVER_REPORT] and r1["payload"] is None and not r1["is_current"]
    assert store.query("SELECT count(*) FROM organ_findings o JOIN extractions e USING (extraction_key) "
                       "WHERE e.report_id = 'r1'").column(0)[0].as_py() == 0
    assert _summary(store, "r1", "liver") == []
    assert _summary(store, "r2", "liver")[0]["state"] == "no_lesion"

    monkeypatch.undo()
    retry = ScriptedBackend([ANSWERS[LIVER_REPORT]])
    stats = asyncio.run(run_extraction(store, retry, PROMPT, SamplingConfig(),
                                       EngineConfig(progress=False, retry_failed=True)))
    assert len(retry.calls) == 1 and stats.ok == 1
    assert _summary(store, "r1", "liver")[0]["largest_diameter_mm"] == 22.0


def test_replacing_rows_of_an_extraction_that_is_not_stored_writes_nothing(store, monkeypatch):
    _extract_with_older_rules(store, monkeypatch, {"r1": LIVER_REPORT})
    answers = store.stale_conversions(CONVERSION_SHA256)
    updates, tumors, findings = reconvert.converted_tables(answers, reconvert.ReconvertStats())
    bad = updates.set_column(0, "extraction_key", [["no-such-key"]])
    with pytest.raises(Exception, match="no-such-key"):
        store.replace_conversions(bad, tumors.slice(0, 0), findings.slice(0, 0))
    assert store.count_stale_conversions(CONVERSION_SHA256) == 1
    # an incomplete organ set is refused too, before anything changes
    with pytest.raises(Exception, match="organ_findings rows"):
        store.replace_conversions(updates, tumors, findings.slice(1))
    assert _summary(store, "r1", "liver")[0]["state"] == "not_mentioned"


def test_a_store_from_before_the_digest_converts_all_its_answers(tmp_path, monkeypatch):
    path = tmp_path / "old.duckdb"
    monkeypatch.setattr(tables, "MIGRATIONS", tables.MIGRATIONS[:4])
    monkeypatch.setattr(tables, "SCHEMA_VERSION", 4)
    with Store(path) as s:
        add_reports(s, {"r1": LIVER_REPORT})
        s.con.execute("""INSERT INTO extractions (extraction_key, report_id, report_version, report_sha256,
                         config_hash, status, raw_output, created_at)
                         SELECT 'k1', report_id, version, sha256, 'c', 'ok', $raw, now()::TIMESTAMP FROM reports""",
                      {"raw": ANSWERS[LIVER_REPORT]})
    monkeypatch.undo()
    with Store(path) as s:
        assert s.count_stale_conversions(CONVERSION_SHA256) == 1
        stats = reconvert_store(s, progress=False)
        assert (stats.checked, stats.changed, stats.failed) == (1, 1, 0)
        assert _summary(s, "r1", "liver")[0]["largest_diameter_mm"] == 22.0


def test_reconvert_command_converts_one_run_key_or_all(tmp_path, monkeypatch):
    from rsuper.cli import app

    path = tmp_path / "s.duckdb"
    with Store(path) as s:
        _extract_with_older_rules(s, monkeypatch, {"r1": LIVER_REPORT})
        key = s.query("SELECT config_hash FROM extractions").column(0)[0].as_py()
    runner = CliRunner()
    wrong = runner.invoke(app, ["reconvert", "--db", str(path), "--config-hash", "zz", "--no-progress"])
    assert wrong.exit_code != 0 and "no stored run keys start with it" in wrong.output
    done = runner.invoke(app, ["reconvert", "--db", str(path), "--config-hash", key[:8], "--no-progress", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout.strip().splitlines()[-1])["reconverted"] == 1
    with Store(path, read_only=True) as s:
        assert _summary(s, "r1", "liver")[0]["state"] == "lesion"


def _fail_with_older_rules(store, monkeypatch, texts, script):
    """Extract `texts` as an rsuper whose rules rejected every answer (each report fails after its repair call),
    stamped with another digest; `script` is what the backend answers, in order."""
    add_reports(store, texts)
    monkeypatch.setattr(engine, "CONVERSION_SHA256", OLD_RULES)

    def reject(raw, text, model):
        raise AnswerError("the answer breaks a rule of older rules: scripted")

    monkeypatch.setattr(engine, "parse_answer", reject)
    asyncio.run(run_extraction(store, ScriptedBackend(script, max_concurrency=1), PROMPT, SamplingConfig(),
                               EngineConfig(progress=False, reconvert=False)))  # as that rsuper, which had no pass
    monkeypatch.undo()


def test_a_failed_answer_that_older_rules_rejected_becomes_usable_without_an_llm_call(store, monkeypatch):
    _fail_with_older_rules(store, monkeypatch, {"r1": LIVER_REPORT},
                           ["not the answer", ANSWERS[LIVER_REPORT]])  # the repair call's answer is stored
    assert store.query("SELECT status, attempts FROM extractions").to_pylist() == [{"status": "failed", "attempts": 2}]
    backend = ScriptedBackend([])
    stats = asyncio.run(run_extraction(store, backend, PROMPT, SamplingConfig(), QUIET))
    assert backend.calls == [] and stats.pending == 0
    assert stats.summary()["reconvert_recovered"] == 1 and stats.summary()["reconvert_failed"] == 0
    row = store.query("SELECT status, error, conversion_sha256, is_current FROM extractions").to_pylist()[0]
    assert row == {"status": "repaired", "error": None, "conversion_sha256": CONVERSION_SHA256, "is_current": True}
    assert _summary(store, "r1", "liver")[0]["largest_diameter_mm"] == 22.0


def test_a_failed_answer_still_rejected_is_checked_once_and_failures_of_the_server_are_left(store, monkeypatch):
    from extract.backends.base import BackendError, Completion

    cut = Completion(text=ANSWERS[KIDNEY_REPORT][:40], finish_reason="length", prompt_tokens=100, output_tokens=2048)
    _fail_with_older_rules(store, monkeypatch, {"r1": LIVER_REPORT}, ["not JSON", "still not JSON"])
    _fail_with_older_rules(store, monkeypatch, {"r2": KIDNEY_REPORT}, [cut])  # cut at max_tokens
    _fail_with_older_rules(store, monkeypatch, {"r3": NORMAL_REPORT},  # the repair call got no answer
                           [ANSWERS[NORMAL_REPORT], BackendError("the server fell over")])
    before = {r["report_id"]: r for r in store.query("SELECT report_id, error, conversion_sha256 FROM extractions"
                                                      ).to_pylist()}
    stats = reconvert_store(store, progress=False)
    assert (stats.checked, stats.changed, stats.failed, stats.recovered) == (1, 0, 0, 0)
    rows = {r["report_id"]: r for r in store.query("SELECT report_id, status, error, conversion_sha256, raw_output "
                                                    "FROM extractions").to_pylist()}
    assert {r["status"] for r in rows.values()} == {"failed"}
    assert rows["r1"]["error"].startswith(f"conversion {CONVERSION_SHA256[:12]}: ")
    assert rows["r1"]["conversion_sha256"] == CONVERSION_SHA256 and rows["r1"]["raw_output"] == "still not JSON"
    for rid in ("r2", "r3"):  # the rules never saw a whole answer there: --retry-failed asks again
        assert (rows[rid]["error"], rows[rid]["conversion_sha256"]) == (before[rid]["error"], OLD_RULES)
    assert rows["r2"]["error"].startswith("output reached max_tokens")
    assert rows["r3"]["error"].startswith("transport: ")
    assert reconvert_store(store, progress=False).checked == 0
