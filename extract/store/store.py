"""The `Store` class: one connection to one DuckDB file, with every read and write the pipeline does.

DuckDB lets one process write a file, and no process read it meanwhile. A long job therefore releases the file
between its writes (`Store.release`), and openers wait up to `wait_s` for it (`StoreLockedError` after that), so
`rsuper query` works during an extraction. Every write is one explicit transaction fed from Arrow tables (no
row-by-row inserts), so a failed write leaves the store as it was. The DDL and its migrations live in
`extract.store.tables`, the export SQL in `extract.store.export`.

Report text is protected health information: nothing here logs it, and error messages never quote it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

# The module, not its names: migrations and the DDL version are read at call time (tests extend them).
from extract.store import tables
from extract.store.errors import StoreError, StoreLockedError, StoreReadOnlyError, translate
from extract.store.export import EXPORT_FORMATS, rsuper_csv_sql
from extract.store.tables import quote_ident, sql_str
from schemas.vocab import ORGANS

DEFAULT_DB = Path("data") / "rsuper.duckdb"

log = logging.getLogger("rsuper.store")
_WAIT_WARNING_S = 10.0  # waiting longer than this for the file is said once

#: Extraction states whose rows feed the summaries (a failed extraction has no findings).
USABLE_STATUSES = ("ok", "repaired")


@dataclass(frozen=True)
class IngestStats:
    """What `Store.add_reports` did with one dump (counts of dump rows).

    Attributes:
        new: rows that created a new report id (version 1).
        unchanged: rows whose (report_id, text) was already stored under some version.
        new_versions: rows that added a new version to an existing report id.
        duplicates_in_dump: rows repeating an earlier (report_id, text) pair of the same dump.
    """

    new: int
    unchanged: int
    new_versions: int
    duplicates_in_dump: int

    @property
    def rows(self) -> int:
        return self.new + self.unchanged + self.new_versions + self.duplicates_in_dump


@dataclass(frozen=True)
class SourceInfo:
    """How one dump was read, recorded in `ingests` with what `add_reports` did with it.

    Attributes:
        encodings: encoding -> files read with it (one file, unless a folder of .txt).
        encoding_guessed: some file was neither UTF-8 nor BOM-marked and had no `--encoding`.
        rows_read: data rows in the dump.
        n_skipped: bad rows left out (`--skip-bad-rows`).
    """

    encodings: Mapping[str, int]
    encoding_guessed: bool
    rows_read: int
    n_skipped: int = 0


@dataclass(frozen=True)
class WriteStats:
    """What `Store.write_extractions` did: extractions written and extraction keys already present."""

    written: int
    skipped: int


class StoredAnswer(NamedTuple):
    """A stored extraction's answer with what was derived from it (`Store.stale_conversions`)."""

    extraction_key: str
    report_id: str
    status: str
    attempts: int | None
    error: str | None
    payload: str | None
    raw_output: str | None
    text: str


def default_db_path() -> Path:
    """The store path: `$RSUPER_DB` when set, else `data/rsuper.duckdb` (relative to the working dir)."""
    env = os.environ.get("RSUPER_DB")
    return Path(env) if env else DEFAULT_DB


def _refresh_current(con: duckdb.DuckDBPyConnection, affected: str) -> None:
    """Recompute `is_current` of extractions and organ_findings for the report ids in table `affected`.

    The current extraction of a report is, among the usable (ok/repaired) extractions of its latest stored
    version, the newest by created_at (ties: the larger extraction_key). Leaves temp table `_cur`
    (extraction_key) for the caller.
    """
    usable = ", ".join(sql_str(s) for s in USABLE_STATUSES)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _cur AS
        SELECT e.extraction_key FROM extractions e
        JOIN (SELECT report_id, max(version) AS version FROM reports SEMI JOIN {affected} USING (report_id)
              GROUP BY report_id) l
          ON e.report_id = l.report_id AND e.report_version = l.version
        WHERE e.status IN ({usable})
        QUALIFY row_number() OVER (PARTITION BY e.report_id ORDER BY e.created_at DESC, e.extraction_key DESC) = 1"""
    )
    for table in ("extractions", "organ_findings"):
        con.execute(
            f"""UPDATE {table} SET is_current = NOT is_current
            WHERE report_id IN (SELECT report_id FROM {affected})
              AND is_current <> (extraction_key IN (SELECT extraction_key FROM _cur))"""
        )


#: DuckDB settings of a connection for user SQL: the statement filter of `Store.query` is not the only wall
#: (EXPLAIN ANALYZE COPY, read_csv, glob, INSTALL pass it), so the engine itself refuses files, network and
#: extensions, and `lock_configuration` stops a SET from turning that back on.
SANDBOX_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}


class Store:
    """A DuckDB file holding reports and extraction results.

    Use as a context manager: `with Store(path) as store: ...`. Opening for writing creates the file and
    parent folder and applies pending migrations; opening read-only needs an existing, migrated file.

    Args:
        path: database file; `None` means `default_db_path()`.
        read_only: open without the write lock (many readers may share the file).
        sandboxed: with `read_only`, a connection that cannot reach anything but this file whatever SQL it runs
            (`SANDBOX_CONFIG`: no file, network or extension access, configuration locked); for user SQL.
        wait_s: how long opening waits while another process holds the file (s), e.g. an extraction between two
            of its writes; then `StoreLockedError`.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, read_only: bool = False,
                 sandboxed: bool = False, wait_s: float = 0.0) -> None:
        if sandboxed and not read_only:
            raise ValueError("a sandboxed store is read-only: pass read_only=True")
        self.path = Path(path) if path is not None else default_db_path()
        self.read_only = read_only
        self.sandboxed = sandboxed
        self.wait_s = wait_s
        self._con: duckdb.DuckDBPyConnection | None = None
        self._released = False

    # -- connection -------------------------------------------------------------------------------

    def __enter__(self) -> Store:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if self._con is not None:
            return
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder, not a DuckDB file")
        if self.read_only and not self.path.exists():
            raise StoreError(f"{self.path}: no such database; create it with `rsuper ingest`")
        if not self.read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot create the folder for the database: {exc}") from exc
        self._con = self._connect()
        self._released = False
        try:
            version = self.schema_version()
            if self.read_only:
                if version != tables.SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path}: store DDL version {version}, this rsuper needs {tables.SCHEMA_VERSION}; "
                        "open it once for writing (e.g. `rsuper ingest`) to migrate it"
                    )
            else:
                self._migrate(version)
            self._follow_vocabulary()
        except BaseException:
            self.close()
            raise

    def _follow_vocabulary(self) -> None:
        """Rebuild `ct_summary` when its organ columns are not those of the vocabulary in force (RSUPER_VOCABULARY
        may add organs): for good on a writable store, as a temporary view (this connection only) on a read-only
        one. Extractions stored before an organ was added have no row for it (NULL columns)."""
        con = self.con
        sql = tables.ct_summary_sql(ORGANS)
        if [r[0] for r in con.execute(f"DESCRIBE {sql}").fetchall()] == \
                [r[0] for r in con.execute("DESCRIBE ct_summary").fetchall()]:
            return
        if self.read_only:
            con.execute(f"CREATE OR REPLACE TEMP VIEW ct_summary AS {sql}")
            return
        with self.transaction() as tx:
            tables.create_views(tx)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection, retried while another process holds the file, for up to `wait_s`."""
        start = time.monotonic()
        deadline = start + self.wait_s
        pause, warned = 0.02, False
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only,
                                      config=SANDBOX_CONFIG if self.sandboxed else {})
            except duckdb.Error as exc:
                error = translate(exc, self.path)
                if not isinstance(error, StoreLockedError) or time.monotonic() >= deadline:
                    if isinstance(error, StoreLockedError) and self.wait_s > 0:
                        error = StoreLockedError(f"{error} (waited {self.wait_s:g} s)")
                    raise error from exc
            if not warned and time.monotonic() - start > _WAIT_WARNING_S:
                # a writer holds a batch for well under a second; this is a program keeping the file open
                log.warning("%s: still waiting for another process to let go of the store (up to %g s)",
                            self.path, self.wait_s)
                warned = True
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.25)

    def close(self) -> None:
        self._released = False
        if self._con is not None:
            self._con.close()
            self._con = None

    def release(self) -> None:
        """Close the file so other processes can open it; the next operation opens it again (waiting up to
        `wait_s` for it). A long job calls this between its writes."""
        if self._con is not None:
            self._con.close()
            self._con = None
            self._released = True

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None and self._released:
            self.open()  # checks the DDL version again: another process may have migrated the file meanwhile
        if self._con is None:
            raise StoreError(f"{self.path}: the store is not open (use `with Store(...) as store:`)")
        return self._con

    @contextlib.contextmanager
    def job_lock(self, job: str) -> Iterator[None]:
        """Hold `<db>.<job>.lock` (an OS file lock, gone with the process even after SIGKILL) for one job, so two
        runs of it cannot interleave on a file they each release between writes.

        Raises:
            StoreLockedError: another process holds it; the message names its pid.
        """
        lock_path = self.path.with_name(f"{self.path.name}.{job}.lock")
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks; the DuckDB lock alone guards each write
            yield
            return
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
                raise StoreLockedError(
                    f"{self.path}: another `rsuper {job}` is running on this store (pid {holder}); wait for it "
                    "to finish, or stop it") from exc
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """BEGIN ... COMMIT, or ROLLBACK on any error (DuckDB errors become `StoreError`s)."""
        if self.read_only:
            raise StoreReadOnlyError(f"{self.path}: the store is open read-only; this operation writes")
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
            con.execute("COMMIT")
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            raise translate(exc, self.path) from exc
        except BaseException:
            con.execute("ROLLBACK")
            raise

    # -- versioning -------------------------------------------------------------------------------

    def schema_version(self) -> int:
        """The store DDL version recorded in `_meta` (0 for a new, empty file)."""
        has_meta = _first(self.con.sql(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = '_meta' AND table_schema = 'main'"
        ))[0]
        if not has_meta:
            return 0
        row = _first(self.con.sql("SELECT value FROM _meta WHERE key = 'schema_version'"))
        return int(row[0]) if row else 0

    def meta(self) -> dict[str, str]:
        return dict(self.con.sql("SELECT key, value FROM _meta ORDER BY key").fetchall())

    def _migrate(self, version: int) -> None:
        if version > tables.SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: store DDL version {version} is newer than this rsuper ({tables.SCHEMA_VERSION}); "
                "upgrade rsuper"
            )
        if version == tables.SCHEMA_VERSION:
            return
        with self.transaction() as con:
            tables.migrate(con, version, _utcnow().isoformat(timespec="seconds"))

    # -- reports ----------------------------------------------------------------------------------

    def add_reports(self, table: pa.Table, source: str, info: SourceInfo | None = None) -> IngestStats:
        """Store one dump's reports in one transaction; idempotent.

        A (report_id, text) pair already stored under any version is left alone, so ingesting the same
        (or an older) dump again changes nothing. A new text for a stored id becomes the next version.
        Several distinct texts for one id inside the table become successive versions in row order.

        Args:
            table: columns `report_id`, `text` (already normalised), and optionally `sha256` (of the
                UTF-8 text; computed here when absent), `sections` (list of struct name/text),
                `n_chars`, `source_row`, `source_file` (defaults to `source`).
            source: the dump's path or name, recorded per row.
            info: how the dump was read; when given, one `ingests` row is written in the same transaction.

        Returns:
            Counts of new reports, unchanged rows, new versions and in-dump duplicates.
        """
        for col in ("report_id", "text"):
            if col not in table.column_names:
                raise ValueError(f"add_reports: the table has no '{col}' column")
        n = table.num_rows
        table = table.append_column("_ord", pa.array(range(n), pa.int64()))
        optional = {
            "sha256": "sha256(text)",
            "sections": "NULL::STRUCT(name VARCHAR, text VARCHAR)[]",
            "n_chars": "length(text)",
            "source_row": "_ord + 1",
            "source_file": sql_str(source),
        }
        select = ", ".join(
            c if c in table.column_names else f"{expr} AS {c}" for c, expr in optional.items()
        )
        now = _utcnow()
        with self.transaction() as con:
            con.register("_dump", table)
            try:
                # Keys only: the text is read once, from the Arrow table, by the final INSERT.
                con.execute(
                    f"""CREATE OR REPLACE TEMP VIEW _src AS
                    SELECT report_id::VARCHAR AS report_id, text::VARCHAR AS text, {select}, _ord FROM _dump"""
                )
                con.execute(
                    """CREATE OR REPLACE TEMP TABLE _incoming AS
                    SELECT report_id, sha256, _ord FROM _src
                    QUALIFY row_number() OVER (PARTITION BY report_id, sha256 ORDER BY _ord) = 1"""
                )
                distinct = _first(con.sql("SELECT count(*) FROM _incoming"))[0]
                con.execute(
                    """CREATE OR REPLACE TEMP TABLE _fresh AS
                    SELECT i.report_id, i._ord, m.max_version FROM _incoming i
                    ANTI JOIN reports r ON r.report_id = i.report_id AND r.sha256 = i.sha256
                    LEFT JOIN (SELECT report_id, max(version) AS max_version FROM reports GROUP BY report_id) m
                      ON m.report_id = i.report_id"""
                )
                new_ids, new_versions = _first(con.sql(
                    """SELECT count(DISTINCT report_id) FILTER (WHERE max_version IS NULL),
                              count(*) - count(DISTINCT report_id) FILTER (WHERE max_version IS NULL)
                       FROM _fresh"""
                ))
                if new_ids + new_versions:
                    con.execute(
                        """INSERT INTO reports BY NAME
                        SELECT s.report_id,
                               (coalesce(f.max_version, 0)
                                + row_number() OVER (PARTITION BY s.report_id ORDER BY s._ord))::INTEGER AS version,
                               s.sha256, s.text, s.sections, s.n_chars::INTEGER AS n_chars, s.source_file,
                               s.source_row::BIGINT AS source_row, $now AS ingested_at
                        FROM _src s JOIN _fresh f ON f._ord = s._ord""",
                        {"now": now},
                    )
                fresh = new_ids + new_versions
                if fresh:  # a new version of a report hides its older extractions
                    con.execute("CREATE OR REPLACE TEMP TABLE _affected AS SELECT DISTINCT report_id FROM _fresh")
                    _refresh_current(con, "_affected")
                    con.execute("DROP TABLE _affected; DROP TABLE _cur")
                # Temp objects of a failed transaction vanish with it.
                con.execute("DROP TABLE _incoming; DROP TABLE _fresh; DROP VIEW _src")
                stats = IngestStats(new=int(new_ids), unchanged=int(distinct - fresh),
                                    new_versions=int(new_versions), duplicates_in_dump=int(n - distinct))
                if info is not None:
                    con.execute(
                        """INSERT INTO ingests VALUES ($source, $enc, $guessed, $rows, $new, $versions, $unchanged,
                                                       $dups, $skipped, $now)""",
                        {"source": source, "enc": json.dumps(dict(info.encodings), sort_keys=True),
                         "guessed": info.encoding_guessed, "rows": info.rows_read, "new": stats.new,
                         "versions": stats.new_versions, "unchanged": stats.unchanged,
                         "dups": stats.duplicates_in_dump, "skipped": info.n_skipped, "now": now},
                    )
            finally:
                con.unregister("_dump")
        return stats

    def latest_reports(self, limit: int | None = None) -> pa.Table:
        """The latest version of every report, ordered by report_id (at most `limit` rows)."""
        sql = "SELECT * FROM latest_reports ORDER BY report_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self.con.sql(sql).to_arrow_table()

    # -- extraction runs and results --------------------------------------------------------------

    def record_run(self, run: Mapping[str, Any]) -> None:
        """Insert or replace one `extraction_runs` row (keys are column names; missing ones are NULL)."""
        if "run_id" not in run or "config_hash" not in run:
            raise ValueError("record_run: run_id and config_hash are required")
        row = pa.Table.from_pylist([dict(run)])
        with self.transaction() as con:
            con.register("_run", row)
            try:
                con.execute("DELETE FROM extraction_runs WHERE run_id = $id", {"id": run["run_id"]})
                con.execute("INSERT INTO extraction_runs BY NAME SELECT * FROM _run")
            finally:
                con.unregister("_run")

    def finish_run(self, run_id: str, *, n_ok: int, n_repaired: int, n_failed: int, outcome: str = "done",
                   n_left_pending: int = 0) -> None:
        """Set a run's end time, outcome (one of `tables.RUN_OUTCOMES`) and counts."""
        if outcome not in tables.RUN_OUTCOMES:
            raise ValueError(f"finish_run: outcome {outcome!r} is not one of {tables.RUN_OUTCOMES}")
        with self.transaction() as con:
            con.execute(
                """UPDATE extraction_runs SET finished_at = $t, n_ok = $ok, n_repaired = $rep, n_failed = $fail,
                          outcome = $outcome, n_left_pending = $pending
                   WHERE run_id = $id""",
                {"t": _utcnow(), "ok": n_ok, "rep": n_repaired, "fail": n_failed, "outcome": outcome,
                 "pending": n_left_pending, "id": run_id},
            )

    def close_killed_runs(self) -> list[str]:
        """Finish the runs that never finished (their process was killed): outcome `killed`, counts from the
        extractions they stored, end time their last stored result (else their start).

        Call it only while holding `job_lock("extract")`, when no run can be alive. Returns their run ids.
        """
        with self.transaction() as con:
            killed = [r[0] for r in con.execute(
                "SELECT run_id FROM extraction_runs WHERE finished_at IS NULL ORDER BY started_at").fetchall()]
            if killed:
                con.execute(
                    """UPDATE extraction_runs r SET outcome = 'killed',
                              finished_at = coalesce(s.last_at, r.started_at, $now),
                              n_ok = coalesce(s.n_ok, 0), n_repaired = coalesce(s.n_repaired, 0),
                              n_failed = coalesce(s.n_failed, 0)
                       FROM (SELECT k.run_id, max(e.created_at) AS last_at,
                                    count(e.status) FILTER (WHERE e.status = 'ok') AS n_ok,
                                    count(e.status) FILTER (WHERE e.status = 'repaired') AS n_repaired,
                                    count(e.status) FILTER (WHERE e.status = 'failed') AS n_failed
                             FROM extraction_runs k LEFT JOIN extractions e USING (run_id)
                             WHERE k.finished_at IS NULL GROUP BY k.run_id) s
                       WHERE r.run_id = s.run_id""",
                    {"now": _utcnow()},
                )
        return killed

    def pending_reports(self, config_hash: str, limit: int | None = None) -> list[tuple[str, int, str, str]]:
        """Latest report versions with no stored extraction under `config_hash`, ordered by report id.

        A stored row of any status counts as done: its extraction key derives from exactly the report id, the
        text's sha256 and `config_hash`, so a run never calls the LLM for it again. A new version of a report
        (new text, new sha256) is pending again.

        Returns:
            (report_id, version, sha256, text) per pending report, at most `limit` of them.
        """
        sql = """SELECT r.report_id, r.version, r.sha256, r.text FROM latest_reports r
                 WHERE NOT EXISTS (SELECT 1 FROM extractions e WHERE e.config_hash = $cfg
                                   AND e.report_id = r.report_id AND e.report_sha256 = r.sha256)
                 ORDER BY r.report_id"""
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        try:
            rows = self.con.execute(sql, {"cfg": config_hash}).fetchall()
        except duckdb.Error as exc:
            raise translate(exc, self.path) from exc
        return [(str(rid), int(version), str(sha), str(text)) for rid, version, sha, text in rows]

    def count_failed(self, config_hash: str) -> int:
        """Latest report versions whose stored extraction under `config_hash` failed."""
        sql = """SELECT count(*) FROM latest_reports r JOIN extractions e
                 ON e.report_id = r.report_id AND e.report_sha256 = r.sha256
                 WHERE e.config_hash = $cfg AND e.status = 'failed'"""
        return int(self.con.execute(sql, {"cfg": config_hash}).fetchall()[0][0])

    def retire_failed(self, config_hash: str, run_id: str | None = None) -> int:
        """Move the `failed` extractions stored under `config_hash` to `extraction_failures` (stamped with the
        time and `run_id` of the run retrying them), so that run extracts those reports again and the history
        stays.

        A failed extraction has no tumor or organ rows and is never current, so nothing else changes. Returns
        how many were moved.
        """
        params = {"cfg": config_hash}
        with self.transaction() as con:
            n = con.execute(
                """INSERT INTO extraction_failures BY NAME
                   SELECT extraction_key, run_id, report_id, report_version, report_sha256, config_hash, attempts,
                          error, raw_output, prompt_tokens, output_tokens, latency_s, created_at,
                          $now AS retried_at, $run AS retried_by_run
                   FROM extractions WHERE config_hash = $cfg AND status = 'failed'""",
                {**params, "now": _utcnow(), "run": run_id}).fetchall()[0][0]
            con.execute("DELETE FROM extractions WHERE config_hash = $cfg AND status = 'failed'", params)
        return int(n)

    def write_extractions(self, extractions: pa.Table, tumors: pa.Table, organ_findings: pa.Table,
                          shards: pa.Table | None = None) -> WriteStats:
        """Store extraction results in one transaction: a report's rows are all there or none are.

        Idempotent on `extraction_key`: a key already stored is skipped with all its tumor and
        organ rows. Every usable (ok/repaired) extraction must come with exactly one organ_findings row
        per organ key of `schemas.vocab.ORGANS`.

        Args:
            extractions: rows of the `extractions` table (columns by name; missing ones are NULL).
            tumors: rows of `schemas.tables.TUMORS_SCHEMA`, keyed by `extraction_key`.
            organ_findings: rows of `schemas.tables.ORGAN_FINDINGS_SCHEMA`, keyed by `extraction_key`.
            shards: `extraction_shards` rows of the result shards these rows come from (`extract.shards`),
                recorded in the same transaction; a shard id already recorded is left as it was.

        Raises:
            StoreError: duplicate keys in the batch, rows whose key is not in `extractions`, or an
                incomplete organ set; nothing is written then.
        """
        # `is_current` belongs to the store, never to the caller.
        extractions, organ_findings = (t.drop_columns([c for c in ("is_current",) if c in t.column_names])
                                       for t in (extractions, organ_findings))
        with self.transaction() as con:
            con.register("_ext", extractions)
            con.register("_tum", tumors)
            con.register("_org", organ_findings)
            try:
                if not _batch_is_consistent(extractions, tumors, organ_findings):
                    self._check_batch(con)  # finds the problem and says which
                con.execute(
                    "CREATE OR REPLACE TEMP TABLE _new_keys AS "
                    "SELECT extraction_key FROM _ext ANTI JOIN extractions USING (extraction_key)"
                )
                written = con.execute(
                    "INSERT INTO extractions BY NAME "
                    "SELECT *, false AS is_current FROM _ext SEMI JOIN _new_keys USING (extraction_key)"
                ).fetchall()[0][0]
                con.execute("INSERT INTO tumors BY NAME SELECT * FROM _tum SEMI JOIN _new_keys USING (extraction_key)")
                con.execute("CREATE OR REPLACE TEMP TABLE _affected AS "
                            "SELECT DISTINCT report_id FROM _ext SEMI JOIN _new_keys USING (extraction_key)")
                _refresh_current(con, "_affected")
                con.execute(
                    "INSERT INTO organ_findings BY NAME SELECT *, "
                    "extraction_key IN (SELECT extraction_key FROM _cur) AS is_current "
                    "FROM _org SEMI JOIN _new_keys USING (extraction_key)"
                )
                con.execute("DROP TABLE _affected; DROP TABLE _cur; DROP TABLE _new_keys")
                if shards is not None:
                    con.register("_shards", shards)
                    con.execute("INSERT INTO extraction_shards BY NAME SELECT * FROM _shards "
                                "ANTI JOIN extraction_shards USING (shard_id)")
            finally:
                for name in ("_ext", "_tum", "_org", "_shards"):
                    with contextlib.suppress(duckdb.Error):
                        con.unregister(name)
        return WriteStats(written=int(written), skipped=int(extractions.num_rows - written))

    def _stale_where(self, config_hash: str | None,
                     failed_unless: tuple[str, ...] | None) -> tuple[str, dict[str, Any]]:
        usable = ", ".join(sql_str(s) for s in USABLE_STATUSES)
        where = f"e.status IN ({usable})"
        if failed_unless is not None:  # or a failed extraction with an answer and none of those errors
            where = " OR ".join([where, " AND ".join([
                "e.status = 'failed'", "e.raw_output IS NOT NULL",
                *(f"NOT starts_with(coalesce(e.error, ''), {sql_str(p)})" for p in failed_unless)])])
        where = f"({where}) AND e.conversion_sha256 IS DISTINCT FROM $conv"
        return (where + " AND e.config_hash = $cfg", {"cfg": config_hash}) if config_hash else (where, {})

    def count_stale_conversions(self, conversion_sha256: str, config_hash: str | None = None,
                                failed_unless: tuple[str, ...] | None = None) -> int:
        """Usable extractions (of any run key, or of `config_hash`) whose rows another conversion made (or an
        rsuper that did not record it); with `failed_unless`, also failed ones with a stored answer whose error
        begins with none of those prefixes."""
        where, params = self._stale_where(config_hash, failed_unless)
        return int(self.con.execute(f"SELECT count(*) FROM extractions e WHERE {where}",
                                    {**params, "conv": conversion_sha256}).fetchall()[0][0])

    def stale_conversions(self, conversion_sha256: str, config_hash: str | None = None,
                          limit: int | None = None,
                          failed_unless: tuple[str, ...] | None = None) -> list[StoredAnswer]:
        """The extractions `count_stale_conversions` counts, ordered by extraction key, at most `limit` of them."""
        where, params = self._stale_where(config_hash, failed_unless)
        sql = f"""SELECT e.extraction_key, e.report_id, e.status, e.attempts, e.error, e.payload::VARCHAR,
                         e.raw_output, r.text
                  FROM extractions e JOIN reports r ON r.report_id = e.report_id AND r.version = e.report_version
                  WHERE {where} ORDER BY e.extraction_key"""
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        try:
            rows = self.con.execute(sql, {**params, "conv": conversion_sha256}).fetchall()
        except duckdb.Error as exc:
            raise translate(exc, self.path) from exc
        return [StoredAnswer(*row) for row in rows]

    def replace_conversions(self, updates: pa.Table, tumors: pa.Table, organ_findings: pa.Table) -> int:
        """Replace the rows stored extractions derive from their answers, in one transaction.

        Args:
            updates: one row per extraction: `extraction_key`, `status` (its old usable status, or `failed` when
                the answer no longer converts), `error`, `payload` and `conversion_sha256`.
            tumors, organ_findings: the new rows of those extractions (none for a failed one), as
                `write_extractions` takes them.

        Raises:
            StoreError: a key that is not stored, or an incomplete organ set; nothing is written then.
        Returns:
            how many extractions were updated.
        """
        organ_findings = organ_findings.drop_columns([c for c in ("is_current",) if c in organ_findings.column_names])
        with self.transaction() as con:
            con.register("_upd", updates)
            con.register("_tum", tumors)
            con.register("_org", organ_findings)
            try:
                missing = con.execute("SELECT extraction_key FROM _upd ANTI JOIN extractions USING (extraction_key) "
                                      "LIMIT 1").fetchall()
                if missing:
                    raise StoreError(f"{self.path}: extraction {missing[0][0]} is not stored; nothing to convert")
                # The batch check of `write_extractions`, on the updated rows (its `_ext`).
                con.execute("CREATE OR REPLACE TEMP VIEW _ext AS SELECT e.extraction_key, e.report_id, u.status "
                            "FROM _upd u JOIN extractions e USING (extraction_key)")
                if not _batch_is_consistent(updates, tumors, organ_findings):
                    self._check_batch(con)
                for table in ("tumors", "organ_findings"):
                    con.execute(f"DELETE FROM {table} WHERE extraction_key IN (SELECT extraction_key FROM _upd)")
                n = con.execute(
                    """UPDATE extractions e SET status = u.status, error = u.error, payload = u.payload,
                              conversion_sha256 = u.conversion_sha256
                       FROM _upd u WHERE e.extraction_key = u.extraction_key""").fetchall()[0][0]
                con.execute("INSERT INTO tumors BY NAME SELECT * FROM _tum")
                con.execute("CREATE OR REPLACE TEMP TABLE _affected AS SELECT DISTINCT report_id FROM _ext")
                _refresh_current(con, "_affected")
                con.execute("INSERT INTO organ_findings BY NAME SELECT *, "
                            "extraction_key IN (SELECT extraction_key FROM _cur) AS is_current FROM _org")
                con.execute("DROP TABLE _affected; DROP TABLE _cur; DROP VIEW _ext")
            finally:
                for name in ("_upd", "_tum", "_org"):
                    with contextlib.suppress(duckdb.Error):
                        con.unregister(name)
        return int(n)

    def loaded_shards(self) -> set[str]:
        """Ids of the result shards already merged into the store (`extraction_shards`)."""
        return {r[0] for r in self.con.execute("SELECT shard_id FROM extraction_shards").fetchall()}

    def _check_batch(self, con: duckdb.DuckDBPyConnection) -> None:
        """Raise `StoreError` for the first problem of the registered batch `_ext`/`_tum`/`_org` (one query)."""
        usable = ", ".join(sql_str(s) for s in USABLE_STATUSES)
        organ_list = ", ".join(sql_str(o) for o in ORGANS)
        n_organs = len(ORGANS)
        # `execute`, not a relation: the query is bound once, and LIMIT 1 is part of it.
        rows = con.execute(
            f"""WITH per AS (
                  SELECT extraction_key, count(*) AS n_rows,
                         count(DISTINCT organ) FILTER (WHERE organ IN ({organ_list})) AS n_keys
                  FROM _org GROUP BY extraction_key)
            SELECT * FROM (
              (SELECT 1 AS kind, extraction_key AS key, NULL AS report_id, 0 AS n_keys, 0 AS n_rows
               FROM _ext GROUP BY extraction_key HAVING count(*) > 1 LIMIT 1)
              UNION ALL
              (SELECT 2, extraction_key, NULL, 0, 0 FROM _tum ANTI JOIN _ext USING (extraction_key) LIMIT 1)
              UNION ALL
              (SELECT 3, extraction_key, NULL, 0, 0 FROM _org ANTI JOIN _ext USING (extraction_key) LIMIT 1)
              UNION ALL
              (SELECT CASE WHEN e.status IN ({usable}) THEN 4 ELSE 5 END, e.extraction_key, e.report_id,
                      coalesce(n_keys, 0), coalesce(n_rows, 0)
               FROM _ext e LEFT JOIN per USING (extraction_key)
               WHERE CASE WHEN e.status IN ({usable})
                          THEN coalesce(n_rows, 0) <> {n_organs} OR coalesce(n_keys, 0) <> {n_organs}
                          ELSE coalesce(n_rows, 0) > 0 END
               LIMIT 1))
            ORDER BY kind LIMIT 1"""
        ).fetchall()
        if not rows:
            return
        kind, key, report_id, n_keys, n_rows = rows[0]
        messages = {
            1: f"extraction_key {key} appears twice in one batch",
            2: f"tumors row with extraction_key {key} has no extraction row",
            3: f"organ_findings row with extraction_key {key} has no extraction row",
            4: f"extraction {key} (report {report_id}) has {n_rows} organ_findings rows covering {n_keys} organ "
               f"keys; exactly one row per each of the {n_organs} keys is needed",
            5: f"extraction {key} (report {report_id}) failed but has {n_rows} organ_findings rows; "
               "a failed extraction has none",
        }
        raise StoreError(f"{self.path}: {messages[kind]}")

    def tumor_payloads(self, report_ids: Iterable[str]) -> dict[str, str]:
        """The validated payload JSON of the current extraction of each given report that has one."""
        ids = pa.table({"report_id": pa.array(list(report_ids), pa.string())})
        self.con.register("_ids", ids)
        try:
            rows = self.con.sql(
                "SELECT report_id, payload::VARCHAR FROM current_extractions SEMI JOIN _ids USING (report_id)"
            ).fetchall()
        finally:
            self.con.unregister("_ids")
        return dict(rows)

    # -- cases ------------------------------------------------------------------------------------

    def replace_cases(self, table: pa.Table) -> int:
        """Replace the whole `cases` table with `table` (columns by name) in one transaction."""
        if "ct_id" not in table.column_names or "image_path" not in table.column_names:
            raise ValueError("replace_cases: ct_id and image_path columns are required")
        with self.transaction() as con:
            con.register("_cases", table)
            try:
                con.execute("DELETE FROM cases")
                con.execute("INSERT INTO cases BY NAME SELECT * FROM _cases")
            finally:
                con.unregister("_cases")
        return table.num_rows

    # -- audit ------------------------------------------------------------------------------------

    def write_audit(self, table: pa.Table) -> int:
        """Store `rsuper audit` rows (`schemas.tables.AUDIT_SCHEMA`) in one transaction, replacing earlier rows of
        the same CTs: auditing again is idempotent, and rows of CTs not in `table` stay."""
        if "ct_id" not in table.column_names:
            raise ValueError("write_audit: a ct_id column is required")
        with self.transaction() as con:
            con.register("_audit", table)
            try:
                con.execute("DELETE FROM audit WHERE ct_id IN (SELECT ct_id FROM _audit)")
                con.execute("INSERT INTO audit BY NAME SELECT * FROM _audit")
            finally:
                con.unregister("_audit")
        return table.num_rows

    # -- exports ----------------------------------------------------------------------------------

    def export(self, fmt: str, out: str | os.PathLike[str], table: str = "organ_summary") -> int:
        """Write an export file and return its row count.

        Args:
            fmt: `organ-summary-jsonl` (one JSON object per report x organ), `rsuper-csv` (the R-Super
                per-tumor CSV layout, see `rsuper_csv_sql`) or `parquet` (the table or view `table`, zstd).
            out: output file; its folder is created.
            table: for `parquet` only: which table or view to write.
        """
        organ_order = "list_position([" + ", ".join(sql_str(o) for o in ORGANS) + "], organ)"
        if fmt == "organ-summary-jsonl":
            sql, options = f"SELECT * FROM organ_summary ORDER BY report_id, {organ_order}", "FORMAT json"
        elif fmt == "rsuper-csv":
            sql, options = rsuper_csv_sql(), "FORMAT csv, HEADER true"
        elif fmt == "parquet":
            known = {r[0] for r in self.con.sql(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
            if table not in known:
                raise StoreError(f"{self.path}: no table or view {table!r}; choose from {sorted(known)}")
            sql, options = f"SELECT * FROM {quote_ident(table)}", "FORMAT parquet, COMPRESSION zstd"
        else:
            raise StoreError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            n = _first(self.con.sql(f"SELECT count(*) FROM ({sql})"))[0]
            self.con.execute(f"COPY ({sql}) TO {sql_str(str(out))} ({options})")
        except duckdb.Error as exc:
            raise translate(exc, self.path) from exc
        return int(n)

    # -- read-only SQL ----------------------------------------------------------------------------

    def query(self, sql: str) -> pa.Table:
        """Run one read-only SQL statement (SELECT, SHOW, DESCRIBE, EXPLAIN) and return its result.

        Raises:
            StoreReadOnlyError: for any statement that writes (INSERT, COPY, ATTACH, CREATE, ...).
        """
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise StoreError(f"{self.path}: cannot parse the query: {exc}") from exc
        if len(statements) != 1:
            raise StoreError(f"{self.path}: give exactly one SQL statement (got {len(statements)})")
        kind = statements[0].type
        if kind not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
            raise StoreReadOnlyError(
                f"{self.path}: `rsuper query` is read-only; the {kind.name} statement is refused"
            )
        try:
            return self.con.sql(sql).to_arrow_table()
        except duckdb.PermissionException as exc:
            raise StoreReadOnlyError(
                f"{self.path}: `rsuper query` reads only this store; files, network and extensions are off "
                f"({str(exc).split(' - ')[0]})"
            ) from exc
        except duckdb.Error as exc:
            raise translate(exc, self.path) from exc


def _batch_is_consistent(extractions: pa.Table, tumors: pa.Table, organ_findings: pa.Table) -> bool:
    """Whether a batch certainly passes `Store._check_batch`, decided in Arrow in a few milliseconds (that
    query costs tens of milliseconds per write). False means "let the query decide", never "invalid".

    Sufficient conditions: unique extraction keys; every tumor row keyed by an extraction; organ rows keyed only
    by usable extractions, all with an organ key of `ORGANS`, as many distinct (key, organ) pairs as rows, and
    18 rows per usable extraction (so each has exactly one row per organ key, and a failed one has none).
    """
    try:
        keys = extractions.column("extraction_key").combine_chunks()
        if pc.count_distinct(keys, mode="all").as_py() != extractions.num_rows:
            return False
        tumor_keys = tumors.column("extraction_key")
        if tumor_keys.null_count or (len(tumor_keys) and not pc.all(pc.is_in(tumor_keys, value_set=keys)).as_py()):
            return False
        usable = pc.filter(keys, pc.is_in(extractions.column("status").combine_chunks(),
                                          value_set=pa.array(USABLE_STATUSES)))
        org_keys, organs = organ_findings.column("extraction_key"), organ_findings.column("organ")
        if usable.null_count or org_keys.null_count or organ_findings.num_rows != len(ORGANS) * len(usable):
            return False
        if organ_findings.num_rows == 0:
            return True
        if not (pc.all(pc.is_in(org_keys, value_set=usable)).as_py()
                and pc.all(pc.is_in(organs, value_set=pa.array(ORGANS))).as_py()):
            return False
        pairs = organ_findings.select(["extraction_key", "organ"]).group_by(["extraction_key", "organ"]).aggregate([])
        return pairs.num_rows == organ_findings.num_rows
    except (pa.ArrowException, KeyError):
        return False


def _first(rel: duckdb.DuckDBPyRelation) -> tuple | None:
    """First row of a relation (DuckDB 2 relations have no fetchone)."""
    rows = rel.limit(1).fetchall()
    return rows[0] if rows else None


def _utcnow() -> datetime:
    """Current UTC time as a naive datetime (the store's TIMESTAMP columns are UTC)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
