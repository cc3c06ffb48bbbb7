"""The store's DDL: tables and views, built from the Arrow schemas in `schemas.tables`, and their migrations.

The `tumors`, `organ_findings` and `audit` tables are created from the Arrow schemas in `schemas.tables`
(`arrow_to_duckdb_type` does the mapping), so the DDL follows the shared schema package. The store's own
DDL version lives in `_meta` and moves forward through `MIGRATIONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import duckdb
import pyarrow as pa

from extract.store.errors import StoreError
from schemas.vocab import ORGANS

#: Version of the store DDL written by this code (the length of `MIGRATIONS`).
SCHEMA_VERSION = 5


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


def quote_ident(name: str) -> str:
    """A DuckDB identifier in double quotes."""
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
        fields = ", ".join(f"{quote_ident(f.name)} {arrow_to_duckdb_type(f.type)}" for f in dtype)
        return f"STRUCT({fields})"
    raise TypeError(f"no DuckDB column type for Arrow type {dtype}")


def create_table_sql(name: str, schema: pa.Schema, primary_key: Sequence[str] = ()) -> str:
    """`CREATE TABLE` statement for an Arrow schema; non-nullable fields become NOT NULL."""
    cols = [
        f"{quote_ident(f.name)} {arrow_to_duckdb_type(f.type)}{'' if f.nullable else ' NOT NULL'}" for f in schema
    ]
    if primary_key:
        cols.append(f"PRIMARY KEY ({', '.join(quote_ident(c) for c in primary_key)})")
    return f"CREATE TABLE IF NOT EXISTS {quote_ident(name)} (\n  " + ",\n  ".join(cols) + "\n)"


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


def sql_str(value: str) -> str:
    """A DuckDB string literal."""
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
        lit = sql_str(organ)
        cols += [
            f"max(CASE WHEN organ = {lit} THEN CASE state WHEN 'lesion' THEN lesion_count "
            f"WHEN 'equivocal' THEN NULL ELSE 0 END END)::INTEGER AS {quote_ident(organ + '_lesion_count')}",
            f"max(CASE WHEN organ = {lit} THEN CASE state WHEN 'lesion' THEN largest_diameter_mm / 10.0 "
            f"WHEN 'equivocal' THEN NULL ELSE 0.0 END END) AS {quote_ident(organ + '_largest_diameter_cm')}",
            f"max(CASE WHEN organ = {lit} THEN largest_location END) AS {quote_ident(organ + '_largest_location')}",
        ]
    cols.append("CASE WHEN bool_or(state IN ('lesion', 'equivocal')) THEN 0 ELSE 1 END AS no_lesion")
    return "SELECT\n  " + ",\n  ".join(cols) + "\nFROM organ_summary\nGROUP BY report_id"


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """CREATE OR REPLACE VIEW latest_reports AS
        SELECT * FROM reports
        QUALIFY row_number() OVER (PARTITION BY report_id ORDER BY version DESC) = 1"""
    )
    # `is_current` is maintained by every write (see `extract.store.store`), so the summaries are plain scans.
    con.execute("CREATE OR REPLACE VIEW current_extractions AS SELECT * EXCLUDE (is_current) FROM extractions "
                "WHERE is_current")
    cols = ", ".join(quote_ident(c) for c in _ORGAN_SUMMARY_COLUMNS)
    con.execute(f"CREATE OR REPLACE VIEW organ_summary AS SELECT {cols} FROM organ_findings WHERE is_current")
    con.execute(f"CREATE OR REPLACE VIEW ct_summary AS {ct_summary_sql(ORGANS)}")


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
    create_views(con)


#: `extraction_runs.outcome`: how a run ended (the exit codes of `rsuper extract` follow it).
RUN_OUTCOMES = ("done", "failed_reports", "left_pending", "outage", "interrupted", "killed")

_FAILURES_DDL = """
CREATE TABLE IF NOT EXISTS extraction_failures (
  extraction_key VARCHAR NOT NULL,
  run_id         VARCHAR,
  report_id      VARCHAR NOT NULL,
  report_version INTEGER NOT NULL,
  report_sha256  VARCHAR NOT NULL,
  config_hash    VARCHAR NOT NULL,
  attempts       INTEGER,
  error          VARCHAR,
  raw_output     VARCHAR,
  prompt_tokens  INTEGER,
  output_tokens  INTEGER,
  latency_s      DOUBLE,
  created_at     TIMESTAMP NOT NULL,
  retried_at     TIMESTAMP NOT NULL,  -- when `--retry-failed` took the report up again
  retried_by_run VARCHAR
)"""

_INGESTS_DDL = """
CREATE TABLE IF NOT EXISTS ingests (
  source_file       VARCHAR NOT NULL,
  encodings         JSON NOT NULL,     -- {encoding: files read with it}; one file unless a folder of .txt
  encoding_guessed  BOOLEAN NOT NULL,  -- some file was not UTF-8/BOM-marked and had no --encoding
  rows_read         BIGINT NOT NULL,
  n_new             BIGINT NOT NULL,
  n_new_versions    BIGINT NOT NULL,
  n_unchanged       BIGINT NOT NULL,
  n_duplicates      BIGINT NOT NULL,
  n_skipped         BIGINT NOT NULL,
  ingested_at       TIMESTAMP NOT NULL
)"""


def _migration_2(con: duckdb.DuckDBPyConnection) -> None:
    """How each run ended, the failures `--retry-failed` replaced, and one row per ingested dump."""
    con.execute("ALTER TABLE extraction_runs ADD COLUMN IF NOT EXISTS outcome VARCHAR")
    con.execute("ALTER TABLE extraction_runs ADD COLUMN IF NOT EXISTS n_left_pending INTEGER")
    con.execute(_FAILURES_DDL)
    con.execute(_INGESTS_DDL)


_SHARDS_DDL = """
CREATE TABLE IF NOT EXISTS extraction_shards (
  shard_id       VARCHAR PRIMARY KEY,  -- digest of the extraction keys it holds
  run_id         VARCHAR NOT NULL,
  path           VARCHAR NOT NULL,     -- where it was loaded from
  n_extractions  BIGINT NOT NULL,
  n_tumors       BIGINT NOT NULL,
  worker         VARCHAR,              -- host:pid that wrote it
  written_at     TIMESTAMP NOT NULL,
  loaded_at      TIMESTAMP NOT NULL
)"""


def _migration_3(con: duckdb.DuckDBPyConnection) -> None:
    """Result shards of distributed runs (`rsuper extract --engine ray`) merged into the store."""
    con.execute(_SHARDS_DDL)


def _migration_4(con: duckdb.DuckDBPyConnection) -> None:
    """The `audit` table of `rsuper audit` (model versus report, one row per CT), from `schemas.tables`."""
    from schemas.tables import AUDIT_SCHEMA

    con.execute(create_table_sql("audit", AUDIT_SCHEMA, primary_key=("ct_id",)))


def _migration_5(con: duckdb.DuckDBPyConnection) -> None:
    """Which conversion rules made each extraction's rows (`extract.answers.CONVERSION_SHA256`); NULL for the
    rows stored before, which the next `rsuper extract` or `rsuper reconvert` converts again."""
    con.execute("ALTER TABLE extractions ADD COLUMN IF NOT EXISTS conversion_sha256 VARCHAR")


#: Forward migrations: entry i takes a store from DDL version i to i + 1. Each must be idempotent.
MIGRATIONS: tuple[Callable[[duckdb.DuckDBPyConnection], None], ...] = (
    _migration_1, _migration_2, _migration_3, _migration_4, _migration_5)
assert len(MIGRATIONS) == SCHEMA_VERSION


def migrate(con: duckdb.DuckDBPyConnection, version: int, now: str) -> None:
    """Take a store from DDL `version` to `SCHEMA_VERSION` inside the caller's transaction; record it in `_meta`."""
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
