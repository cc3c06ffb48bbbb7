"""Store: DDL from schemas/, migrations, idempotent Arrow writes, views, read-only queries, exports, locking."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extract import store as store_mod
from extract.store import Store, StoreError, StoreLockedError, StoreReadOnlyError, default_db_path, tables
from extract.store.tables import SCHEMA_VERSION, arrow_to_duckdb_type, create_table_sql
from schemas.records import ExtractionPayload
from schemas.tables import ORGAN_FINDINGS_SCHEMA, TUMORS_SCHEMA, extraction_tables
from schemas.vocab import ORGANS

T0 = datetime(2026, 1, 1, 12, 0, 0)


def _reports(*rows: tuple[str, str]) -> pa.Table:
    return pa.table({"report_id": [r[0] for r in rows], "text": [r[1] for r in rows]})


def _payload(*tumors: dict, organs: list[dict] | None = None) -> ExtractionPayload:
    return ExtractionPayload.model_validate({"tumors": list(tumors), "organs": organs or []})


LIVER_CYST = {"id": 1, "organ": "liver", "segments": ["liver_segment_4"], "lesion_type": "cyst",
              "type_certainty": "stated", "attenuation": "hypo",
              "size": {"status": "measured", "diameters_mm": [12.0, 8.0], "reported_text": "1.2 x 0.8 cm"}}
KIDNEY_GROUP = {"id": 2, "organ": "kidney", "laterality": "left", "count": 3, "count_exact": False,
                "size": {"status": "measured", "diameters_mm": [20.0], "reported_text": "2 cm",
                         "refers_to": "largest_of_group"}}


def _extraction(key: str, report_id: str, payload: ExtractionPayload | None, *, version: int = 1,
                status: str = "ok", created: datetime = T0) -> tuple[pa.Table, pa.Table, pa.Table]:
    ext = pa.table({
        "extraction_key": [key], "run_id": ["run1"], "report_id": [report_id], "report_version": [version],
        "report_sha256": ["0" * 64], "config_hash": ["cfg"], "status": [status], "attempts": [1],
        "payload": [payload.model_dump_json() if payload else None], "created_at": [created],
    })
    if payload is None:
        return ext, TUMORS_SCHEMA.empty_table(), ORGAN_FINDINGS_SCHEMA.empty_table()
    tumors, organs = extraction_tables([(key, report_id, payload)])
    return ext, tumors, organs


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "sub" / "rsuper.duckdb") as s:
        yield s


def _count(store: Store, sql: str) -> int:
    return store.query(sql).column(0)[0].as_py()


# -- DDL ------------------------------------------------------------------------------------------


def test_arrow_to_duckdb_type_covers_nested_types():
    assert arrow_to_duckdb_type(pa.string()) == "VARCHAR"
    assert arrow_to_duckdb_type(pa.int32()) == "INTEGER"
    assert arrow_to_duckdb_type(pa.list_(pa.float64())) == "DOUBLE[]"
    assert arrow_to_duckdb_type(pa.list_(pa.float64(), 3)) == "DOUBLE[3]"
    assert arrow_to_duckdb_type(pa.struct([("a", pa.bool_())])) == 'STRUCT("a" BOOLEAN)'
    assert arrow_to_duckdb_type(pa.map_(pa.string(), pa.int64())) == "MAP(VARCHAR, BIGINT)"
    assert arrow_to_duckdb_type(pa.timestamp("us", tz="UTC")) == "TIMESTAMPTZ"
    with pytest.raises(TypeError, match="duration"):
        arrow_to_duckdb_type(pa.duration("s"))


def test_create_table_sql_keeps_not_null_and_primary_key():
    sql = create_table_sql("t", pa.schema([pa.field("k", pa.string(), nullable=False), ("v", pa.int32())]), ["k"])
    con = duckdb.connect()
    con.execute(sql)
    assert con.sql("SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                   "WHERE table_name = 't' ORDER BY ordinal_position").fetchall() == [
        ("k", "VARCHAR", "NO"), ("v", "INTEGER", "YES")]


def test_tables_follow_the_shared_arrow_schemas(store):
    for table, schema in (("tumors", TUMORS_SCHEMA), ("organ_findings", ORGAN_FINDINGS_SCHEMA)):
        cols = store.con.sql(f"SELECT column_name, data_type FROM information_schema.columns "
                             f"WHERE table_name = '{table}' ORDER BY ordinal_position").fetchall()
        expected = [(f.name, arrow_to_duckdb_type(f.type)) for f in schema]
        if table == "organ_findings":  # the store's own flag of the current extraction
            expected.append(("is_current", "BOOLEAN"))
        assert cols == expected


def test_new_store_records_meta_and_reopens_without_migrating(tmp_path):
    path = tmp_path / "a" / "b.duckdb"
    with Store(path) as s:
        meta = s.meta()
    assert meta["schema_version"] == str(SCHEMA_VERSION)
    assert meta["duckdb_version"] == duckdb.__version__
    with Store(path) as s:
        assert s.meta()["created_at"] == meta["created_at"]
    with Store(path, read_only=True) as s:
        assert s.schema_version() == SCHEMA_VERSION


def test_migrations_run_in_order_and_only_once(tmp_path, monkeypatch):
    path = tmp_path / "m.duckdb"
    with Store(path):
        pass
    calls = []

    nxt = SCHEMA_VERSION + 1

    def migration_next(con):
        calls.append(nxt)
        con.execute("ALTER TABLE reports ADD COLUMN IF NOT EXISTS language VARCHAR")

    monkeypatch.setattr(tables, "MIGRATIONS", tables.MIGRATIONS + (migration_next,))
    monkeypatch.setattr(tables, "SCHEMA_VERSION", nxt)
    with Store(path) as s:
        assert s.schema_version() == nxt
        assert "language" in s.con.sql("SELECT * FROM reports").columns
    with Store(path):
        pass
    assert calls == [nxt]


def test_failed_migration_leaves_the_store_at_its_old_version(tmp_path, monkeypatch):
    path = tmp_path / "m.duckdb"
    with Store(path):
        pass

    def broken(con):
        con.execute("ALTER TABLE reports ADD COLUMN half_done VARCHAR")
        raise RuntimeError("boom")

    monkeypatch.setattr(tables, "MIGRATIONS", tables.MIGRATIONS + (broken,))
    monkeypatch.setattr(tables, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError, match="boom"):
        Store(path).open()
    monkeypatch.undo()
    with Store(path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        assert "half_done" not in s.con.sql("SELECT * FROM reports").columns


def test_store_newer_than_code_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "m.duckdb"
    with Store(path) as s:
        s.con.execute("UPDATE _meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer than this rsuper"):
        Store(path).open()


def test_default_path_honours_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("RSUPER_DB", raising=False)
    assert str(default_db_path()) == "data/rsuper.duckdb"
    monkeypatch.setenv("RSUPER_DB", str(tmp_path / "x.duckdb"))
    assert default_db_path() == tmp_path / "x.duckdb"


# -- reports --------------------------------------------------------------------------------------


def test_add_reports_is_idempotent_and_versions_changed_text(store):
    first = store.add_reports(_reports(("A", "one"), ("B", "two"), ("A", "one")), source="d1.csv")
    assert first == store_mod.IngestStats(new=2, unchanged=0, new_versions=0, duplicates_in_dump=1)
    again = store.add_reports(_reports(("A", "one"), ("B", "two")), source="d1.csv")
    assert again == store_mod.IngestStats(new=0, unchanged=2, new_versions=0, duplicates_in_dump=0)
    changed = store.add_reports(_reports(("A", "one, amended"), ("C", "three")), source="d2.csv")
    assert changed == store_mod.IngestStats(new=1, unchanged=0, new_versions=1, duplicates_in_dump=0)
    # An older dump again: every text is known, nothing changes.
    assert store.add_reports(_reports(("A", "one")), source="d1.csv").unchanged == 1
    rows = store.con.sql("SELECT report_id, version, text, source_file FROM reports ORDER BY ALL").fetchall()
    assert rows == [("A", 1, "one", "d1.csv"), ("A", 2, "one, amended", "d2.csv"),
                    ("B", 1, "two", "d1.csv"), ("C", 1, "three", "d2.csv")]
    latest = store.latest_reports().to_pydict()
    assert latest["report_id"] == ["A", "B", "C"] and latest["version"] == [2, 1, 1]
    assert store.latest_reports(limit=1).num_rows == 1


def test_add_reports_computes_sha256_and_length_of_the_text(store):
    import hashlib

    store.add_reports(_reports(("A", "Café lesion")), source="x")
    sha, n = store.con.sql("SELECT sha256, n_chars FROM reports").fetchall()[0]
    assert sha == hashlib.sha256("Café lesion".encode()).hexdigest()
    assert n == 11


def test_several_texts_for_one_id_in_a_dump_become_versions_in_row_order(store):
    stats = store.add_reports(_reports(("A", "v1"), ("A", "v2"), ("A", "v3")), source="x")
    assert (stats.new, stats.new_versions) == (1, 2)
    assert store.con.sql("SELECT version, text FROM reports ORDER BY version").fetchall() == [
        (1, "v1"), (2, "v2"), (3, "v3")]


def test_add_reports_needs_id_and_text(store):
    with pytest.raises(ValueError, match="'text'"):
        store.add_reports(pa.table({"report_id": ["A"]}), source="x")


# -- extractions, views ---------------------------------------------------------------------------


def _write(store, key, rid, payload, **kw):
    return store.write_extractions(*_extraction(key, rid, payload, **kw))


def test_write_extractions_is_idempotent_and_builds_the_summaries(store):
    store.add_reports(_reports(("R1", "liver cyst"), ("R2", "normal")), source="x")
    payload = _payload(LIVER_CYST, KIDNEY_GROUP)
    assert _write(store, "k1", "R1", payload) == store_mod.WriteStats(written=1, skipped=0)
    assert _write(store, "k1", "R1", payload) == store_mod.WriteStats(written=0, skipped=1)
    _write(store, "k2", "R2", _payload(organs=[{"organ": "liver", "state": "no_lesion"}]))
    assert _count(store, "SELECT count(*) FROM tumors") == 2
    assert _count(store, "SELECT count(*) FROM organ_summary") == 2 * len(ORGANS)
    liver = store.query("SELECT * FROM organ_summary WHERE report_id = 'R1' AND organ = 'liver'").to_pylist()[0]
    assert liver == {"report_id": "R1", "organ": "liver", "state": "lesion", "lesion_count": 1,
                     "count_is_lower_bound": False, "largest_diameter_mm": 12.0, "size_bound_mm": None,
                     "largest_location": "segment_4", "sides": None, "largest_attenuation": "hypo"}
    ct = store.query("SELECT * FROM ct_summary ORDER BY report_id").to_pylist()
    assert len(ct[0]) == 1 + 3 * len(ORGANS) + 1
    assert (ct[0]["liver_lesion_count"], ct[0]["liver_largest_diameter_cm"], ct[0]["liver_largest_location"]) == (
        1, pytest.approx(1.2), "segment_4")
    assert (ct[0]["kidney_lesion_count"], ct[0]["kidney_largest_location"], ct[0]["no_lesion"]) == (3, "left", 0)
    assert (ct[1]["liver_lesion_count"], ct[1]["liver_largest_diameter_cm"], ct[1]["no_lesion"]) == (0, 0.0, 1)


def test_current_extraction_is_the_latest_usable_one_of_the_latest_version(store):
    store.add_reports(_reports(("R1", "text v1")), source="x")
    _write(store, "old", "R1", _payload(LIVER_CYST), created=T0)
    _write(store, "new", "R1", _payload(organs=[{"organ": "liver", "state": "no_lesion"}]),
           created=T0 + timedelta(hours=1))
    _write(store, "failed", "R1", None, status="failed", created=T0 + timedelta(hours=2))
    state = "SELECT state FROM organ_summary WHERE report_id = 'R1' AND organ = 'liver'"
    assert store.query(state).column(0).to_pylist() == ["no_lesion"]
    assert json.loads(store.tumor_payloads(["R1", "missing"])["R1"])["tumors"] == []
    # A new report version hides the old extractions until it is extracted itself.
    store.add_reports(_reports(("R1", "text v2")), source="y")
    assert store.query(state).num_rows == 0 and store.tumor_payloads(["R1"]) == {}
    _write(store, "v2", "R1", _payload(LIVER_CYST), version=2, created=T0 + timedelta(hours=3))
    assert store.query(state).column(0).to_pylist() == ["lesion"]


def test_extraction_stored_before_its_report_becomes_current_on_ingest(store):
    _write(store, "k1", "R9", _payload(LIVER_CYST))
    assert store.query("SELECT count(*) FROM organ_summary").column(0)[0].as_py() == 0
    store.add_reports(_reports(("R9", "late report")), source="x")
    assert store.query("SELECT lesion_count FROM organ_summary WHERE organ = 'liver'").column(0).to_pylist() == [1]


def test_ct_summary_keeps_equivocal_organs_unknown(store):
    store.add_reports(_reports(("R1", "maybe")), source="x")
    possible = dict(LIVER_CYST, presence="possible")
    _write(store, "k1", "R1", _payload(possible))
    row = store.query("SELECT liver_lesion_count, liver_largest_diameter_cm, pancreas_lesion_count, no_lesion "
                      "FROM ct_summary").to_pylist()[0]
    assert row == {"liver_lesion_count": None, "liver_largest_diameter_cm": None, "pancreas_lesion_count": 0,
                   "no_lesion": 0}


def test_write_extractions_refuses_incomplete_batches_and_writes_nothing(store):
    ext, tumors, organs = _extraction("k1", "R1", _payload(LIVER_CYST))
    with pytest.raises(StoreError, match="17 organ_findings rows"):
        store.write_extractions(ext, tumors, organs.slice(1))
    with pytest.raises(StoreError, match="no extraction row"):
        store.write_extractions(ext, tumors.set_column(0, "extraction_key", pa.array(["zz"] * tumors.num_rows)),
                                organs)
    with pytest.raises(StoreError, match="appears twice"):
        store.write_extractions(pa.concat_tables([ext, ext]), tumors, organs)
    failed = ext.set_column(ext.schema.get_field_index("status"), "status", pa.array(["failed"]))
    with pytest.raises(StoreError, match="failed but has 18 organ_findings rows"):
        store.write_extractions(failed, tumors.slice(0, 0), organs)
    assert _count(store, "SELECT count(*) FROM extractions") == 0
    assert _count(store, "SELECT count(*) FROM tumors") == 0
    assert _count(store, "SELECT count(*) FROM organ_findings") == 0


def _sha(store: Store, report_id: str) -> str:
    return store.con.sql(f"SELECT sha256 FROM latest_reports WHERE report_id = '{report_id}'").fetchall()[0][0]


def _stored(store: Store, key: str, report_id: str, status: str, cfg: str) -> None:
    """An extraction row of `status` under config `cfg` for the latest version of `report_id`."""
    payload = _payload() if status != "failed" else None
    ext, tumors, organs = _extraction(key, report_id, payload, status=status)
    for name, value in (("report_sha256", _sha(store, report_id)), ("config_hash", cfg)):
        ext = ext.set_column(ext.schema.get_field_index(name), name, pa.array([value]))
    store.write_extractions(ext, tumors, organs)


def test_pending_reports_are_the_latest_versions_without_a_result_under_the_config(store):
    store.add_reports(_reports(("R3", "three"), ("R1", "one"), ("R2", "two"), ("R4", "four v1")), source="x")
    store.add_reports(_reports(("R4", "four v2")), source="y")
    _stored(store, "k1", "R1", "ok", "cfg")
    _stored(store, "k2", "R2", "failed", "cfg")  # a failed result counts as done too
    _stored(store, "k3", "R3", "ok", "other")
    assert store.pending_reports("cfg") == [("R3", 1, _sha(store, "R3"), "three"),
                                            ("R4", 2, _sha(store, "R4"), "four v2")]
    assert [r[0] for r in store.pending_reports("other")] == ["R1", "R2", "R4"]
    assert [r[0] for r in store.pending_reports("cfg", limit=1)] == ["R3"]
    # A new text for a done report makes it pending again.
    store.add_reports(_reports(("R1", "one, amended")), source="z")
    assert [r[:2] for r in store.pending_reports("cfg")] == [("R1", 2), ("R3", 1), ("R4", 2)]


def test_retire_failed_moves_only_the_failed_results_of_the_config_into_the_history(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        store.add_reports(_reports(("R1", "one"), ("R2", "two"), ("R3", "three")), source="x")
        _stored(store, "k1", "R1", "ok", "cfg")
        _stored(store, "k2", "R2", "failed", "cfg")
        _stored(store, "k3", "R3", "failed", "other")
        assert store.retire_failed("cfg", run_id="retry-run") == 1
        assert [r[0] for r in store.pending_reports("cfg")] == ["R2", "R3"]
        assert store.query("SELECT extraction_key FROM extractions ORDER BY 1").column(0).to_pylist() == ["k1", "k3"]
        assert _count(store, "SELECT count(*) FROM organ_summary") == len(ORGANS)  # R1's rows stay current
        history = store.query("SELECT extraction_key, report_id, config_hash, retried_by_run, "
                              "retried_at >= created_at AS later FROM extraction_failures").to_pylist()
        assert history == [{"extraction_key": "k2", "report_id": "R2", "config_hash": "cfg",
                            "retried_by_run": "retry-run", "later": True}]
        assert store.retire_failed("cfg") == 0
    with Store(path, read_only=True) as ro:
        with pytest.raises(StoreReadOnlyError):
            ro.retire_failed("other")
        assert [r[0] for r in ro.pending_reports("other")] == ["R1", "R2"]


def test_a_consistent_batch_skips_the_check_query_and_every_broken_one_runs_it(store, monkeypatch):
    from extract.store.store import _batch_is_consistent

    ext, tumors, organs = _extraction("k1", "R1", _payload(LIVER_CYST))
    ext2, _, organs2 = _extraction("k2", "R2", _payload())
    failed, no_tumors, no_organs = _extraction("k3", "R3", None, status="failed")
    batch = (pa.concat_tables([ext, ext2, failed], promote_options="default"), tumors,
             pa.concat_tables([organs, organs2]))
    assert _batch_is_consistent(*batch)
    assert _batch_is_consistent(ext.slice(0, 0), no_tumors, no_organs)
    broken = [
        (ext, tumors, organs.slice(1)),  # 17 organ rows
        (ext, tumors, pa.concat_tables([organs.slice(1), organs.slice(1, 1)])),  # 18 rows, one organ twice
        (ext, tumors.set_column(0, "extraction_key", pa.array(["zz"] * tumors.num_rows)), organs),
        (pa.concat_tables([ext, ext]), tumors, organs),
        (failed, no_tumors, organs.set_column(0, "extraction_key", pa.array(["k3"] * organs.num_rows))),
        (ext, tumors, organs.set_column(organs.schema.get_field_index("organ"), "organ",
                                        pa.array(["liver"] + list(ORGANS[1:-1]) + ["spleen_x"]))),
    ]
    for case in broken:
        assert not _batch_is_consistent(*case)
    monkeypatch.setattr(Store, "_check_batch", lambda self, con: pytest.fail("the check query ran"))
    assert store.write_extractions(*batch).written == 3


def test_runs_are_recorded_and_finished(store):
    store.record_run({"run_id": "r1", "config_hash": "c", "backend": "local", "sampling": json.dumps({"t": 0}),
                      "started_at": T0})
    store.finish_run("r1", n_ok=3, n_repaired=1, n_failed=2)
    row = store.query("SELECT backend, sampling->>'t', n_ok, n_repaired, n_failed, finished_at IS NOT NULL "
                      "FROM extraction_runs").to_pylist()[0]
    assert list(row.values()) == ["local", "0", 3, 1, 2, True]
    assert store.query("SELECT outcome, n_left_pending FROM extraction_runs").to_pylist() == [
        {"outcome": "done", "n_left_pending": 0}]
    with pytest.raises(ValueError, match="outcome"):
        store.finish_run("r1", n_ok=0, n_repaired=0, n_failed=0, outcome="fine")


def test_runs_that_never_finished_are_closed_as_killed_with_the_counts_they_stored(store):
    store.add_reports(_reports(("R1", "one"), ("R2", "two"), ("R3", "three")), source="x")
    store.record_run({"run_id": "dead", "config_hash": "cfg", "started_at": T0})
    store.record_run({"run_id": "empty", "config_hash": "cfg", "started_at": T0 + timedelta(hours=1)})
    store.record_run({"run_id": "fine", "config_hash": "cfg", "started_at": T0})
    store.finish_run("fine", n_ok=0, n_repaired=0, n_failed=0)
    for key, rid, status in (("k1", "R1", "ok"), ("k2", "R2", "failed")):
        ext, tumors, organs = _extraction(key, rid, _payload(LIVER_CYST) if status == "ok" else None, status=status,
                                          created=T0 + timedelta(minutes=5))
        store.write_extractions(ext.set_column(ext.schema.get_field_index("run_id"), "run_id",
                                               pa.array(["dead"])), tumors, organs)
    assert store.close_killed_runs() == ["dead", "empty"]
    rows = {r["run_id"]: r for r in store.query(
        "SELECT run_id, outcome, n_ok, n_failed, finished_at FROM extraction_runs").to_pylist()}
    assert (rows["dead"]["outcome"], rows["dead"]["n_ok"], rows["dead"]["n_failed"]) == ("killed", 1, 1)
    assert rows["dead"]["finished_at"] == T0 + timedelta(minutes=5)  # its last stored result
    assert (rows["empty"]["outcome"], rows["empty"]["n_ok"], rows["empty"]["finished_at"]) == (
        "killed", 0, T0 + timedelta(hours=1))
    assert rows["fine"]["outcome"] == "done"
    assert store.close_killed_runs() == []


def test_a_released_store_reopens_on_the_next_use_and_lets_other_processes_in_meanwhile(tmp_path):
    path = tmp_path / "s.duckdb"
    reader = textwrap.dedent(f"""
        from extract.store import Store
        with Store({str(path)!r}, read_only=True, wait_s=0) as s:
            print(s.query("SELECT count(*) AS n FROM reports").column("n")[0].as_py())
    """)
    with Store(path) as store:
        store.add_reports(_reports(("R1", "one")), source="x")
        held = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True)
        assert held.returncode != 0 and "locked" in held.stderr
        store.release()
        free = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True)
        assert free.stdout.strip() == "1", free.stderr
        store.add_reports(_reports(("R2", "two")), source="x")  # opens the file again by itself
        assert _count(store, "SELECT count(*) FROM reports") == 2


def test_an_opener_waits_for_a_writer_that_lets_go(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        store.add_reports(_reports(("R1", "one")), source="x")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from extract.store import Store
        with Store({str(path)!r}) as s:
            print("held", flush=True)
            time.sleep(1.5)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(StoreLockedError, match="locked"):
        Store(path, read_only=True).open()
    with pytest.raises(StoreLockedError, match=r"locked.*\(waited 0.2 s\)"):
        Store(path, read_only=True, wait_s=0.2).open()
    t0 = time.monotonic()
    with Store(path, read_only=True, wait_s=30) as ro:
        assert _count(ro, "SELECT count(*) FROM reports") == 1
    assert 0.2 < time.monotonic() - t0 < 10
    holder.wait(10)


def test_the_job_lock_admits_one_holder_and_names_it(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    with store.job_lock("extract"):
        other = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            from extract.store import Store
            with Store({str(store.path)!r}).job_lock("extract"):
                pass
        """)], capture_output=True, text=True)
        assert other.returncode != 0
        assert f"another `rsuper extract` is running on this store (pid {os.getpid()})" in other.stderr
    with store.job_lock("extract"):  # released on exit
        pass


def test_replace_cases_replaces_the_whole_table(store):
    cases = pa.table({"ct_id": ["CT1", "CT2"], "report_id": ["R1", "R2"], "image_path": ["a.nii.gz", "b.nii.gz"],
                      "spacing": pa.array([[0.8, 0.8, 2.5], [1.0, 1.0, 1.0]], pa.list_(pa.float64(), 3)),
                      "split": ["train", "val"]})
    assert store.replace_cases(cases) == 2
    store.replace_cases(cases.slice(1))
    assert store.query("SELECT ct_id, spacing FROM cases").to_pylist() == [
        {"ct_id": "CT2", "spacing": [1.0, 1.0, 1.0]}]


def test_write_audit_replaces_the_rows_of_the_same_cts_in_one_transaction(store):
    from schemas.audit import CTAudit
    from schemas.tables import audit_table

    first = [CTAudit(ct_id="CT1", report_id="R1", score=2.0, reasons=["likely_unit_error"], organs=["liver"]),
             CTAudit(ct_id="CT2", report_id="R2")]
    assert store.write_audit(audit_table(first)) == 2
    store.write_audit(audit_table([first[0].model_copy(update={"score": 0.5, "reasons": ["size_mismatch"]})]))
    assert store.query("SELECT ct_id, score, reasons FROM audit ORDER BY ct_id").to_pylist() == [
        {"ct_id": "CT1", "score": 0.5, "reasons": ["size_mismatch"]}, {"ct_id": "CT2", "score": 0.0, "reasons": []}]
    twice = audit_table([CTAudit(ct_id="CT3"), CTAudit(ct_id="CT3", score=1.0)])
    with pytest.raises(StoreError):  # the primary key refuses the batch, and nothing of it is stored
        store.write_audit(twice)
    assert store.query("SELECT count(*) AS n FROM audit").to_pylist() == [{"n": 2}]


# -- query and export -----------------------------------------------------------------------------


def test_query_refuses_writes_and_multiple_statements(store):
    for sql in ("INSERT INTO cases (ct_id, image_path) VALUES ('x', 'y')", "COPY reports TO 'x.csv'",
                "ATTACH 'other.duckdb'", "DROP TABLE reports"):
        with pytest.raises(StoreReadOnlyError, match="read-only"):
            store.query(sql)
    with pytest.raises(StoreError, match="exactly one"):
        store.query("SELECT 1; SELECT 2")
    assert store.query("SELECT 41 + 1 AS x").to_pylist() == [{"x": 42}]


@pytest.mark.parametrize("sql", [
    "EXPLAIN ANALYZE COPY (SELECT text FROM reports) TO '{tmp}/leak.csv'",
    "EXPLAIN ANALYZE INSTALL httpfs",
    "SELECT * FROM read_csv('{tmp}/outside.csv')",
    "SELECT * FROM read_text('{tmp}/outside.csv')",
    "SELECT * FROM read_blob('{tmp}/outside.csv')",
    "SELECT * FROM read_parquet('{tmp}/outside.parquet')",
    "SELECT * FROM glob('{tmp}/*')",
])
def test_sandboxed_query_reaches_nothing_outside_the_store(tmp_path, sql):
    path = tmp_path / "s.duckdb"
    (tmp_path / "outside.csv").write_text("a,b\n1,2\n")
    with Store(path) as s:
        s.add_reports(_reports(("A", "secret text")), source="x")
    files_before = sorted(p.name for p in tmp_path.iterdir())
    with Store(path, read_only=True, sandboxed=True) as s:
        with pytest.raises(StoreReadOnlyError, match="reads only this store"):
            s.query(sql.format(tmp=tmp_path))
        assert s.query("SELECT count(*) AS n FROM reports").to_pylist() == [{"n": 1}]
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before


def test_sandboxed_query_cannot_switch_the_sandbox_off(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path):
        pass
    with Store(path, read_only=True, sandboxed=True) as s:
        for setting in ("enable_external_access = true", "lock_configuration = false"):
            with pytest.raises(StoreError):
                s.query(f"EXPLAIN ANALYZE SET {setting}")
            with pytest.raises(StoreReadOnlyError, match="read-only"):
                s.query(f"SET {setting}")
        assert s.query("SELECT current_setting('enable_external_access') AS on").to_pylist() == [{"on": False}]
    with pytest.raises(ValueError, match="read_only"):
        Store(path, sandboxed=True)


def test_read_only_store_refuses_writes_and_needs_an_existing_file(tmp_path):
    path = tmp_path / "r.duckdb"
    with pytest.raises(StoreError, match="no such database"):
        Store(path, read_only=True).open()
    assert not path.exists()
    with Store(path):
        pass
    with Store(path, read_only=True) as s:
        with pytest.raises(StoreReadOnlyError, match="read-only"):
            s.add_reports(_reports(("A", "x")), source="x")


def test_second_writer_gets_a_clear_lock_error(tmp_path):
    path = tmp_path / "locked.duckdb"
    with Store(path) as s:
        s.add_reports(_reports(("A", "x")), source="x")
        code = textwrap.dedent(f"""
            from extract.store import Store, StoreLockedError
            try:
                Store({str(path)!r}).open()
            except StoreLockedError as exc:
                print(exc)
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert str(path) in out and "another process has it open" in out


def _store_with_results(tmp_path) -> Store:
    s = Store(tmp_path / "e.duckdb")
    s.open()
    s.add_reports(_reports(("R1", "liver cyst"), ("R2", "normal")), source="x")
    _write(s, "k1", "R1", _payload(LIVER_CYST, KIDNEY_GROUP))
    _write(s, "k2", "R2", _payload())
    return s


def test_export_rsuper_csv_layout(tmp_path):
    with _store_with_results(tmp_path) as s:
        s.replace_cases(pa.table({"ct_id": ["BDMAP_1"], "report_id": ["R1"], "image_path": ["x.nii.gz"]}))
        n = s.export("rsuper-csv", tmp_path / "out" / "tumors.csv")
    rows = list(csv.DictReader((tmp_path / "out" / "tumors.csv").open()))
    assert n == len(rows) == 4
    liver, kidney, kidney_rest, healthy = rows
    assert (liver["BDMAP ID"], liver["Accession Number"], liver["Tumor ID"]) == ("BDMAP_1", "R1", "tumor 1")
    assert (liver["Standardized Organ"], liver["Standardized Location"], liver["Tumor Size (mm)"]) == (
        "liver", "segment 4", "12.0 x 8.0")
    assert (liver["Standardized Attenuation"], liver["Unknow Tumor Size"], liver["no lesion"]) == ("low", "no", "false")
    assert liver["malignancy"] == "no"  # a cyst is benign
    assert (kidney["Tumor ID"], kidney["Tumor Size (mm)"], kidney["Standardized Location"]) == (
        "tumor 2", "20.0", "left")
    assert (kidney_rest["Tumor ID"], kidney_rest["Tumor Size (mm)"]) == ("tumor 3", "multiple")
    assert kidney["Unknow Tumor Size"] == kidney_rest["Unknow Tumor Size"] == "yes"
    assert (healthy["BDMAP ID"], healthy["Tumor ID"], healthy["no lesion"]) == ("R2", "no lesion", "true")


def test_export_organ_summary_jsonl_and_parquet(tmp_path):
    with _store_with_results(tmp_path) as s:
        assert s.export("organ-summary-jsonl", tmp_path / "o.jsonl") == 2 * len(ORGANS)
        assert s.export("parquet", tmp_path / "t.parquet", table="tumors") == 2
        with pytest.raises(StoreError, match="no table or view 'nope'"):
            s.export("parquet", tmp_path / "x.parquet", table="nope")
        with pytest.raises(StoreError, match="unknown export format"):
            s.export("xml", tmp_path / "x.xml")
    lines = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["organ"] for r in lines[: len(ORGANS)]] == list(ORGANS)
    assert lines[0]["report_id"] == "R1" and lines[0]["largest_diameter_mm"] == 12.0
    assert pq.read_table(tmp_path / "t.parquet").column("organ").to_pylist() == ["liver", "kidney"]


def test_ct_summary_follows_an_added_organ_on_open(tmp_path, monkeypatch):
    """RSUPER_VOCABULARY may add an organ: a store made before gets its column on the next open (for good when
    writable, for the connection when read-only); extractions stored before have no row for it (NULL)."""
    path = tmp_path / "v.duckdb"
    with Store(path) as s:
        s.add_reports(_reports(("R1", "cyst")), source="x")
        _write(s, "k1", "R1", _payload(LIVER_CYST))
    added = (*ORGANS, "appendix")
    monkeypatch.setattr(store_mod.store, "ORGANS", added)
    monkeypatch.setattr(tables, "ORGANS", added)
    with Store(path, read_only=True) as s:
        assert s.query("SELECT appendix_lesion_count, liver_lesion_count FROM ct_summary").to_pylist() == [
            {"appendix_lesion_count": None, "liver_lesion_count": 1}]
    with duckdb.connect(str(path), read_only=True) as con:  # the read-only open changed nothing on disk
        assert "appendix_lesion_count" not in [r[0] for r in con.execute("DESCRIBE ct_summary").fetchall()]
    with Store(path) as s:
        pass
    with duckdb.connect(str(path), read_only=True) as con:
        assert "appendix_lesion_count" in [r[0] for r in con.execute("DESCRIBE ct_summary").fetchall()]
