"""`rsuper query` (read-only SQL over the store) and `rsuper export` (organ summary, R-Super CSV, Parquet)."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import sys
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import typer

from extract.cli_errors import fail
from extract.store import EXPORT_FORMATS, Store, StoreError, default_db_path

QUERY_FORMATS = ("table", "csv", "json")
#: An extraction or ingest holds the file only while it writes a batch, so readers wait for it rather than fail.
WAIT_OPTION = typer.Option(60.0, "--wait-s", min=0.0, help="how long to wait while a writer holds the store (s)")


def register(app: typer.Typer) -> None:
    app.command("query")(query)
    app.command("export")(export)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def format_table(table: pa.Table, fmt: str) -> str:
    """Render a query result as an aligned text table, CSV, or JSON lines."""
    rows = table.to_pylist()
    names = table.column_names
    if fmt == "json":
        return "".join(json.dumps({k: _jsonable(v) for k, v in r.items()}, default=str) + "\n" for r in rows)
    if fmt == "csv":
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([["" if r[n] is None else r[n] for n in names] for r in rows])
        return buf.getvalue()
    cells = [[("NULL" if r[n] is None else str(r[n])).replace("\n", "\\n") for n in names] for r in rows]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines) + "\n"


def query(
    sql: str = typer.Argument(..., help="one SELECT statement, e.g. \"SELECT organ, count(*) FROM organ_summary "
                                        "WHERE state = 'lesion' GROUP BY organ\""),
    db: Optional[Path] = typer.Option(None, envvar="RSUPER_DB", help="store file (default data/rsuper.duckdb)"),
    format: str = typer.Option("table", "--format", "-f", help="table | csv | json (JSON lines)"),
    wait_s: float = WAIT_OPTION,
) -> None:
    """Read-only SQL over the store (tables: reports, ingests, extraction_runs, extractions, extraction_failures,
    tumors, organ_findings, cases; views: organ_summary, ct_summary, latest_reports, current_extractions). Writes
    are refused. Works during an extraction (it waits for the batch being written)."""
    if format not in QUERY_FORMATS:
        fail(f"--format must be one of {', '.join(QUERY_FORMATS)}")
    try:
        with Store(db or default_db_path(), read_only=True, sandboxed=True, wait_s=wait_s) as store:
            result = store.query(sql)
    except StoreError as exc:
        fail(str(exc))
    sys.stdout.write(format_table(result, format))


def export(
    out: Path = typer.Argument(..., help="output file"),
    format: str = typer.Option(..., "--format", "-f", help="organ-summary-jsonl | rsuper-csv | parquet"),
    table: str = typer.Option("organ_summary", help="with --format parquet: the table or view to write"),
    db: Optional[Path] = typer.Option(None, envvar="RSUPER_DB", help="store file (default data/rsuper.duckdb)"),
    wait_s: float = WAIT_OPTION,
) -> None:
    """Export the store: the per-organ summary as JSON lines, the R-Super per-tumor CSV layout, or any table
    or view as Parquet."""
    if format not in EXPORT_FORMATS:
        fail(f"--format must be one of {', '.join(EXPORT_FORMATS)}")
    if out.is_dir():
        fail(f"{out}: is a folder; give the path of the file to write")
    try:
        with Store(db or default_db_path(), read_only=True, wait_s=wait_s) as store:
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a file where a folder belongs, a read-only or virtual file system
                fail(f"{out}: cannot create its folder ({exc.strerror or exc}); choose another output path")
            n = store.export(format, out, table=table)
    except StoreError as exc:
        fail(str(exc))
    typer.echo(f"wrote {n} rows to {out}", err=True)
