"""The DuckDB store: reports, extraction runs, extractions, tumors, per-organ findings, cases.

One `Store` is one connection to one DuckDB file. DuckDB allows one writing process per file; a second
writer gets `StoreLockedError`. Every write is one explicit transaction fed from Arrow tables (no
row-by-row inserts), so a failed write leaves the store as it was.

The `tumors` and `organ_findings` tables are created from the Arrow schemas in `schemas.tables`
(`arrow_to_duckdb_type` does the mapping), so the DDL follows the shared schema package. The store's own
DDL version lives in `_meta` and moves forward through `MIGRATIONS`.

Report text is protected health information: nothing here logs it, and error messages never quote it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from schemas.vocab import ORGANS

#: Version of the store DDL written by this code (the length of `MIGRATIONS`).
SCHEMA_VERSION = 1

DEFAULT_DB = Path("data") / "rsuper.duckdb"

#: Extraction states whose rows feed the summaries (a failed extraction has no findings).
USABLE_STATUSES = ("ok", "repaired")


class StoreError(RuntimeError):
    """A store operation failed; the message names the database file and what to do."""


class StoreLockedError(StoreError):
    """Another process holds the DuckDB write lock on the file."""


class StoreReadOnlyError(StoreError):
    """A write was attempted on a store opened read-only, or the file cannot be written."""


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
class WriteStats:
    """What `Store.write_extractions` did: extractions written and extraction keys already present."""

    written: int
    skipped: int


def default_db_path() -> Path:
    """The store path: `$RSUPER_DB` when set, else `data/rsuper.duckdb` (relative to the working dir)."""
    env = os.environ.get("RSUPER_DB")
    return Path(env) if env else DEFAULT_DB


# --------------------------------------------------------------------------------------------------
# Arrow -> DuckDB DDL
# --------------------------------------------------------------------------------------------------

_SIMPLE_TYPES: dict[pa.DataType, str] = {
    pa.string(): "VARCHAR",
    pa.large_string(): "VARCHAR",
    pa.bool_(): "BOOLEAN",
    pa.int8(): "TINYINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.uint8(): "UTINYINT",
    pa.uint16(): "USMALLINT",
    pa.uint32(): "UINTEGER",
    pa.uint64(): "UBIGINT",
    pa.float16(): "FLOAT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.date32(): "DATE",
    pa.binary(): "BLOB",
    pa.large_binary(): "BLOB",
}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def arrow_to_duckdb_type(dtype: pa.DataType) -> str:
    """DuckDB column type for an Arrow type (nested lists, fixed-size lists, structs and maps included).

    Raises:
        TypeError: for an Arrow type the store does not use (unions, durations, ...).
    """
    if dtype in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[dtype]
    if pa.types.is_timestamp(dtype):
        return "TIMESTAMPTZ" if dtype.tz else "TIMESTAMP"
    if pa.types.is_decimal(dtype):
        return f"DECIMAL({dtype.precision}, {dtype.scale})"
    if pa.types.is_dictionary(dtype):
        return arrow_to_duckdb_type(dtype.value_type)
    if pa.types.is_fixed_size_list(dtype):
        return f"{arrow_to_duckdb_type(dtype.value_type)}[{dtype.list_size}]"
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return f"{arrow_to_duckdb_type(dtype.value_type)}[]"
    if pa.types.is_map(dtype):
        return f"MAP({arrow_to_duckdb_type(dtype.key_type)}, {arrow_to_duckdb_type(dtype.item_type)})"
    if pa.types.is_struct(dtype):
        fields = ", ".join(f"{_quote(f.name)} {arrow_to_duckdb_type(f.type)}" for f in dtype)
        return f"STRUCT({fields})"
    raise TypeError(f"no DuckDB column type for Arrow type {dtype}")


def create_table_sql(name: str, schema: pa.Schema, primary_key: Sequence[str] = ()) -> str:
    """`CREATE TABLE` statement for an Arrow schema; non-nullable fields become NOT NULL."""
    cols = [
        f"{_quote(f.name)} {arrow_to_duckdb_type(f.type)}{'' if f.nullable else ' NOT NULL'}" for f in schema
    ]
    if primary_key:
        cols.append(f"PRIMARY KEY ({', '.join(_quote(c) for c in primary_key)})")
    return f"CREATE TABLE IF NOT EXISTS {_quote(name)} (\n  " + ",\n  ".join(cols) + "\n)"


def _table_schemas() -> tuple[pa.Schema, pa.Schema]:
    """(tumors, organ_findings) Arrow schemas from the shared schema package."""
    from schemas.tables import ORGAN_FINDINGS_SCHEMA, TUMORS_SCHEMA

    return TUMORS_SCHEMA, ORGAN_FINDINGS_SCHEMA


# --------------------------------------------------------------------------------------------------
# DDL of the store's own tables and views
# --------------------------------------------------------------------------------------------------

_REPORTS_DDL = """
CREATE TABLE IF NOT EXISTS reports (
  report_id   VARCHAR NOT NULL,
  version     INTEGER NOT NULL,
  sha256      VARCHAR NOT NULL,
  text        VARCHAR NOT NULL,
  sections    STRUCT(name VARCHAR, text VARCHAR)[],
  n_chars     INTEGER NOT NULL,
  source_file VARCHAR,
  source_row  BIGINT,
  ingested_at TIMESTAMP NOT NULL,
  PRIMARY KEY (report_id, version)
)"""

_RUNS_DDL = """
CREATE TABLE IF NOT EXISTS extraction_runs (
  run_id         VARCHAR PRIMARY KEY,
  config_hash    VARCHAR NOT NULL,
  backend        VARCHAR,
  model_id       VARCHAR,
  model_revision VARCHAR,
  quantization   VARCHAR,
  prompt_id      VARCHAR,
  prompt_sha256  VARCHAR,
  schema_version VARCHAR,
  sampling       JSON,
  versions       JSON,
  started_at     TIMESTAMP,
  finished_at    TIMESTAMP,
  n_ok           INTEGER,
  n_repaired     INTEGER,
  n_failed       INTEGER
)"""

_EXTRACTIONS_DDL = """
CREATE TABLE IF NOT EXISTS extractions (
  extraction_key VARCHAR PRIMARY KEY,
  run_id         VARCHAR,
  report_id      VARCHAR NOT NULL,
  report_version INTEGER NOT NULL,
  report_sha256  VARCHAR NOT NULL,
  config_hash    VARCHAR NOT NULL,
  status         VARCHAR NOT NULL CHECK (status IN ('ok', 'repaired', 'failed')),
  attempts       INTEGER,
  error          VARCHAR,
  raw_output     VARCHAR,
  payload        JSON,
  prompt_tokens  INTEGER,
  output_tokens  INTEGER,
  latency_s      DOUBLE,
  created_at     TIMESTAMP NOT NULL,
  is_current     BOOLEAN NOT NULL DEFAULT false  -- maintained by the store: the report's current extraction
)"""

_CASES_DDL = """
CREATE TABLE IF NOT EXISTS cases (
  ct_id            VARCHAR PRIMARY KEY,
  report_id        VARCHAR,
  image_path       VARCHAR NOT NULL,
  organ_mask_path  VARCHAR,
  lesion_mask_path VARCHAR,
  spacing          DOUBLE[3],
  split            VARCHAR,
  shape            INTEGER[3],
  content_sha256   VARCHAR
)"""

_ORGAN_SUMMARY_COLUMNS = (
    "report_id",
    "organ",
    "state",
    "lesion_count",
    "count_is_lower_bound",
    "largest_diameter_mm",
    "size_bound_mm",
    "largest_location",
    "sides",
    "largest_attenuation",
)


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def ct_summary_sql(organs: Sequence[str]) -> str:
    """`SELECT` over `organ_summary` giving one row per report in the R-Super per-CT layout.

    Per organ: `<organ>_lesion_count` (0 for no_lesion/not_mentioned, NULL when equivocal),
    `<organ>_largest_diameter_cm` (mm / 10; 0 without lesions; NULL for an unmeasured lesion or an
    equivocal organ), `<organ>_largest_location`; then `no_lesion` (1 when no organ is lesion or
    equivocal, else 0).
    """
    cols = ["report_id"]
    for organ in organs:
        lit = _sql_str(organ)
        cols += [
            f"max(CASE WHEN organ = {lit} THEN CASE state WHEN 'lesion' THEN lesion_count "
            f"WHEN 'equivocal' THEN NULL ELSE 0 END END)::INTEGER AS {_quote(organ + '_lesion_count')}",
            f"max(CASE WHEN organ = {lit} THEN CASE state WHEN 'lesion' THEN largest_diameter_mm / 10.0 "
            f"WHEN 'equivocal' THEN NULL ELSE 0.0 END END) AS {_quote(organ + '_largest_diameter_cm')}",
            f"max(CASE WHEN organ = {lit} THEN largest_location END) AS {_quote(organ + '_largest_location')}",
        ]
    cols.append("CASE WHEN bool_or(state IN ('lesion', 'equivocal')) THEN 0 ELSE 1 END AS no_lesion")
    return "SELECT\n  " + ",\n  ".join(cols) + "\nFROM organ_summary\nGROUP BY report_id"


def _create_views(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """CREATE OR REPLACE VIEW latest_reports AS
        SELECT * FROM reports
        QUALIFY row_number() OVER (PARTITION BY report_id ORDER BY version DESC) = 1"""
    )
    # `is_current` is maintained by every write (see `_refresh_current`), so the summaries are plain scans.
    con.execute("CREATE OR REPLACE VIEW current_extractions AS SELECT * EXCLUDE (is_current) FROM extractions "
                "WHERE is_current")
    cols = ", ".join(_quote(c) for c in _ORGAN_SUMMARY_COLUMNS)
    con.execute(f"CREATE OR REPLACE VIEW organ_summary AS SELECT {cols} FROM organ_findings WHERE is_current")
    con.execute(f"CREATE OR REPLACE VIEW ct_summary AS {ct_summary_sql(ORGANS)}")


def _refresh_current(con: duckdb.DuckDBPyConnection, affected: str) -> None:
    """Recompute `is_current` of extractions and organ_findings for the report ids in table `affected`.

    The current extraction of a report is, among the usable (ok/repaired) extractions of its latest stored
    version, the newest by created_at (ties: the larger extraction_key). Leaves temp table `_cur`
    (extraction_key) for the caller.
    """
    usable = ", ".join(_sql_str(s) for s in USABLE_STATUSES)
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


def _migration_1(con: duckdb.DuckDBPyConnection) -> None:
    tumors, organ_findings = _table_schemas()
    missing = [c for c in _ORGAN_SUMMARY_COLUMNS if c not in organ_findings.names]
    if missing or "extraction_key" not in organ_findings.names:
        raise StoreError(f"schemas.tables.ORGAN_FINDINGS_SCHEMA lacks columns {missing or ['extraction_key']}")
    for ddl in (_REPORTS_DDL, _RUNS_DDL, _EXTRACTIONS_DDL, _CASES_DDL):
        con.execute(ddl)
    con.execute(create_table_sql("tumors", tumors))
    # The store adds `is_current` (kept in step with extractions) so organ_summary is a filtered scan.
    # No primary key: `write_extractions` checks one row per (extraction, organ key), and an index on
    # millions of rows would slow every bulk write.
    organ_findings = organ_findings.append(pa.field("is_current", pa.bool_(), nullable=False))
    con.execute(create_table_sql("organ_findings", organ_findings))
    _create_views(con)


#: Forward migrations: entry i takes a store from DDL version i to i + 1. Each must be idempotent.
MIGRATIONS: tuple[Callable[[duckdb.DuckDBPyConnection], None], ...] = (_migration_1,)
assert len(MIGRATIONS) == SCHEMA_VERSION


def _translate(exc: duckdb.Error, path: Path) -> StoreError:
    """A DuckDB error turned into a store error that names the file and says what to do."""
    msg = str(exc)
    low = msg.lower()
    if "lock" in low and ("conflicting" in low or "could not set" in low):
        return StoreLockedError(
            f"{path}: the database is locked: another process is writing to it. "
            "Wait for it to finish, or use another --db."
        )
    if "read-only" in low or "read only" in low:
        return StoreReadOnlyError(f"{path}: the database is open read-only; this command cannot write to it.")
    if "permission denied" in low or "read-only file system" in low:
        return StoreReadOnlyError(f"{path}: the database file cannot be written (permission denied).")
    return StoreError(f"{path}: {msg}")


_PAIRED = ("kidney", "adrenal_gland", "lung", "breast", "ovary_adnexa")

#: Our organ keys -> R-Super `Standardized Organ` names (others keep their key).
_RSUPER_ORGAN = {"adrenal_gland": "adrenal gland", "lymph_node": "lymph node", "ovary_adnexa": "ovary", "other": "u"}


def rsuper_csv_sql() -> str:
    """`SELECT` giving the R-Super per-tumor CSV layout (EXTRACTION.md (e)) from `tumors`.

    One row per lesion of the current extraction (presence definite/probable), or one `no lesion` row for a
    report without any. `BDMAP ID` is the CT id from `cases` (one block per CT of the report), else the
    report id. Group records expand as the reference does: an exactly counted group measured `each_of_group`
    gives one sized row per lesion; any other group gives its sized row (if measured) plus one `multiple` row.
    `Tumor Size (mm)` is "a x b x c" in mm (one decimal), `multiple`, or `u`; `Unknow Tumor Size` is `yes` when
    the CT has a `multiple`/`u` row in the same standardized organ.
    """
    organ_map = " ".join(f"WHEN {_sql_str(k)} THEN {_sql_str(v)}" for k, v in _RSUPER_ORGAN.items())
    paired = ", ".join(_sql_str(o) for o in _PAIRED)
    return f"""
WITH cur AS (
  SELECT c.extraction_key, c.report_id, coalesce(k.ct_id, c.report_id) AS bdmap_id
  FROM current_extractions c LEFT JOIN cases k ON k.report_id = c.report_id
),
t AS (
  SELECT cur.bdmap_id, cur.report_id, tm.*,
         len(coalesce(tm.size_diameters_mm, [])) > 0 AS measured,
         (tm.count > 1 OR NOT tm.count_exact OR tm.innumerable) AS is_group
  FROM tumors tm JOIN cur USING (extraction_key)
  WHERE tm.presence IN ('definite', 'probable')
),
rows AS (
  SELECT t.*, r.range AS part,
         CASE WHEN measured THEN array_to_string(list_transform(size_diameters_mm, lambda x: printf('%.1f', x)), ' x ')
              ELSE 'u' END AS size_mm
  FROM t, range(CASE WHEN is_group AND measured AND count_exact AND size_refers_to = 'each_of_group'
                     THEN count ELSE 1 END) r
  WHERE measured OR NOT is_group
  UNION ALL
  SELECT t.*, 1000000 AS part, 'multiple' AS size_mm FROM t
  WHERE is_group AND NOT (measured AND count_exact AND size_refers_to = 'each_of_group')
),
std AS (
  SELECT *,
    CASE organ {organ_map} ELSE organ END AS std_organ,
    CASE WHEN organ = 'liver' THEN array_to_string(
           list_transform(segments, lambda s: replace(s, 'liver_segment_', 'segment ')), ' / ')
         WHEN organ = 'pancreas' THEN array_to_string(list_sort(list_distinct(list_transform(segments,
           lambda s: CASE WHEN s IN ('pancreas_head', 'pancreas_uncinate', 'pancreas_neck') THEN 'head'
                     ELSE replace(s, 'pancreas_', '') END))), ' / ')
         WHEN organ IN ({paired}) THEN CASE laterality WHEN 'bilateral' THEN 'left / right'
                                                       ELSE coalesce(laterality, '') END
         ELSE '' END AS std_location
  FROM rows
)
SELECT bdmap_id AS "BDMAP ID", report_id AS "Accession Number",
  'tumor ' || row_number() OVER (PARTITION BY bdmap_id ORDER BY tumor_id, part) AS "Tumor ID",
  organ AS "Organ", lesion_type AS "Tumor Type", coalesce(location_text, '') AS "Tumor Location",
  size_mm AS "Tumor Size (mm)", attenuation AS "Tumor Attenuation",
  std_organ AS "Standardized Organ", coalesce(std_location, '') AS "Standardized Location",
  CASE attenuation WHEN 'hypo' THEN 'low' WHEN 'hyper' THEN 'high' WHEN 'iso' THEN 'iso'
                   WHEN 'heterogeneous' THEN 'heterogeneous' ELSE 'u' END AS "Standardized Attenuation",
  CASE WHEN bool_or(size_mm IN ('multiple', 'u')) OVER (PARTITION BY bdmap_id, std_organ) THEN 'yes' ELSE 'no' END
    AS "Unknow Tumor Size",
  false AS "no lesion",
  CASE malignancy WHEN 'malignant' THEN 'yes' WHEN 'benign' THEN 'no' ELSE 'u' END AS "malignancy"
FROM std
UNION ALL
SELECT bdmap_id, report_id, 'no lesion', '', '', '', '', '', '', '', '', 'no', true, ''
FROM cur WHERE bdmap_id NOT IN (SELECT bdmap_id FROM t)
ORDER BY "BDMAP ID", "no lesion" DESC, length("Tumor ID"), "Tumor ID"
"""


EXPORT_FORMATS = ("organ-summary-jsonl", "rsuper-csv", "parquet")


# --------------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------------


class Store:
    """A DuckDB file holding reports and extraction results.

    Use as a context manager: `with Store(path) as store: ...`. Opening for writing creates the file and
    parent folder and applies pending migrations; opening read-only needs an existing, migrated file.

    Args:
        path: database file; `None` means `default_db_path()`.
        read_only: open without the write lock (many readers may share the file).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, read_only: bool = False) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.read_only = read_only
        self._con: duckdb.DuckDBPyConnection | None = None

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
        try:
            self._con = duckdb.connect(str(self.path), read_only=self.read_only)
        except duckdb.Error as exc:
            raise _translate(exc, self.path) from exc
        try:
            version = self.schema_version()
            if self.read_only:
                if version != SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path}: store DDL version {version}, this rsuper needs {SCHEMA_VERSION}; "
                        "open it once for writing (e.g. `rsuper ingest`) to migrate it"
                    )
            else:
                self._migrate(version)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise StoreError(f"{self.path}: the store is not open (use `with Store(...) as store:`)")
        return self._con

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
            raise _translate(exc, self.path) from exc
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
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: store DDL version {version} is newer than this rsuper ({SCHEMA_VERSION}); "
                "upgrade rsuper"
            )
        if version == SCHEMA_VERSION:
            return
        now = _utcnow().isoformat(timespec="seconds")
        with self.transaction() as con:
            con.execute("CREATE TABLE IF NOT EXISTS _meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
            for migration in MIGRATIONS[version:]:
                migration(con)
            meta = {"schema_version": str(SCHEMA_VERSION), "duckdb_version": duckdb.__version__}
            if version == 0:
                meta["created_at"] = now
            meta[f"migrated_to_{SCHEMA_VERSION}_at"] = now
            con.register("_meta_in", pa.table({"key": list(meta), "value": list(meta.values())}))
            con.execute("INSERT OR REPLACE INTO _meta SELECT key, value FROM _meta_in")
            con.unregister("_meta_in")

    # -- reports ----------------------------------------------------------------------------------

    def add_reports(self, table: pa.Table, source: str) -> IngestStats:
        """Store one dump's reports in one transaction; idempotent.

        A (report_id, text) pair already stored under any version is left alone, so ingesting the same
        (or an older) dump again changes nothing. A new text for a stored id becomes the next version.
        Several distinct texts for one id inside the table become successive versions in row order.

        Args:
            table: columns `report_id`, `text` (already normalised), and optionally `sha256` (of the
                UTF-8 text; computed here when absent), `sections` (list of struct name/text),
                `n_chars`, `source_row`, `source_file` (defaults to `source`).
            source: the dump's path or name, recorded per row.

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
            "source_file": _sql_str(source),
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
            finally:
                con.unregister("_dump")
        return IngestStats(
            new=int(new_ids),
            unchanged=int(distinct - fresh),
            new_versions=int(new_versions),
            duplicates_in_dump=int(n - distinct),
        )

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

    def finish_run(self, run_id: str, *, n_ok: int, n_repaired: int, n_failed: int) -> None:
        """Set a run's end time and outcome counts."""
        with self.transaction() as con:
            con.execute(
                """UPDATE extraction_runs SET finished_at = $t, n_ok = $ok, n_repaired = $rep, n_failed = $fail
                   WHERE run_id = $id""",
                {"t": _utcnow(), "ok": n_ok, "rep": n_repaired, "fail": n_failed, "id": run_id},
            )

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
            raise _translate(exc, self.path) from exc
        return [(str(rid), int(version), str(sha), str(text)) for rid, version, sha, text in rows]

    def delete_failed(self, config_hash: str) -> int:
        """Remove the `failed` extractions stored under `config_hash`, so a run extracts those reports again.

        A failed extraction has no tumor or organ rows and is never current, so nothing else changes. Returns
        how many were removed.
        """
        with self.transaction() as con:
            n = con.execute("SELECT count(*) FROM extractions WHERE config_hash = $cfg AND status = 'failed'",
                            {"cfg": config_hash}).fetchall()[0][0]
            con.execute("DELETE FROM extractions WHERE config_hash = $cfg AND status = 'failed'", {"cfg": config_hash})
        return int(n)

    def write_extractions(self, extractions: pa.Table, tumors: pa.Table, organ_findings: pa.Table) -> WriteStats:
        """Store extraction results in one transaction: a report's rows are all there or none are.

        Idempotent on `extraction_key`: a key already stored is skipped with all its tumor and
        organ rows. Every usable (ok/repaired) extraction must come with exactly one organ_findings row
        per organ key of `schemas.vocab.ORGANS`.

        Args:
            extractions: rows of the `extractions` table (columns by name; missing ones are NULL).
            tumors: rows of `schemas.tables.TUMORS_SCHEMA`, keyed by `extraction_key`.
            organ_findings: rows of `schemas.tables.ORGAN_FINDINGS_SCHEMA`, keyed by `extraction_key`.

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
            finally:
                for name in ("_ext", "_tum", "_org"):
                    con.unregister(name)
        return WriteStats(written=int(written), skipped=int(extractions.num_rows - written))

    def _check_batch(self, con: duckdb.DuckDBPyConnection) -> None:
        """Raise `StoreError` for the first problem of the registered batch `_ext`/`_tum`/`_org` (one query)."""
        usable = ", ".join(_sql_str(s) for s in USABLE_STATUSES)
        organ_list = ", ".join(_sql_str(o) for o in ORGANS)
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

    # -- exports ----------------------------------------------------------------------------------

    def export(self, fmt: str, out: str | os.PathLike[str], table: str = "organ_summary") -> int:
        """Write an export file and return its row count.

        Args:
            fmt: `organ-summary-jsonl` (one JSON object per report x organ), `rsuper-csv` (the R-Super
                per-tumor CSV layout, see `rsuper_csv_sql`) or `parquet` (the table or view `table`, zstd).
            out: output file; its folder is created.
            table: for `parquet` only: which table or view to write.
        """
        organ_order = "list_position([" + ", ".join(_sql_str(o) for o in ORGANS) + "], organ)"
        if fmt == "organ-summary-jsonl":
            sql, options = f"SELECT * FROM organ_summary ORDER BY report_id, {organ_order}", "FORMAT json"
        elif fmt == "rsuper-csv":
            sql, options = rsuper_csv_sql(), "FORMAT csv, HEADER true"
        elif fmt == "parquet":
            known = {r[0] for r in self.con.sql(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
            if table not in known:
                raise StoreError(f"{self.path}: no table or view {table!r}; choose from {sorted(known)}")
            sql, options = f"SELECT * FROM {_quote(table)}", "FORMAT parquet, COMPRESSION zstd"
        else:
            raise StoreError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            n = _first(self.con.sql(f"SELECT count(*) FROM ({sql})"))[0]
            self.con.execute(f"COPY ({sql}) TO {_sql_str(str(out))} ({options})")
        except duckdb.Error as exc:
            raise _translate(exc, self.path) from exc
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
        except duckdb.Error as exc:
            raise _translate(exc, self.path) from exc


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
