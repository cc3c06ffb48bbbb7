"""`rsuper ingest`: load report dumps into the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from extract.backends.base import MAX_REPORT_CHARS
from extract.cli_errors import fail
from extract.ingest import DEFAULT_MAX_CHARS, IngestConfig, IngestError, load_dump, store_dump
from extract.store import Store, StoreError, default_db_path


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)


def ingest(
    dumps: list[Path] = typer.Argument(..., help="CSV/TSV, JSONL/JSON, Parquet, .xlsx files or folders of .txt"),
    db: Optional[Path] = typer.Option(None, envvar="RSUPER_DB", help="store file (default data/rsuper.duckdb)"),
    id_column: Optional[str] = typer.Option(None, help="id column (default: detected, e.g. 'Accession Number')"),
    text_column: Optional[str] = typer.Option(None, help="report text column (default: detected, e.g. 'Report')"),
    sheet: Optional[str] = typer.Option(None, help="Excel sheet to read (needed when several have reports)"),
    delimiter: Optional[str] = typer.Option(None, help="field delimiter (default: sniffed from the header)"),
    encoding: Optional[str] = typer.Option(None, help="force a text encoding (default: UTF-8, else detected)"),
    fallback_encoding: Optional[str] = typer.Option(
        None, help="mixed-encoding files: read the non-UTF-8 lines with this encoding (e.g. cp1252)"),
    max_chars: int = typer.Option(DEFAULT_MAX_CHARS, min=1, help="longest accepted report, in characters"),
    skip_bad_rows: bool = typer.Option(False, help="leave out bad rows (empty text, garbage, too long) and list them"),
    allow_changed_duplicates: bool = typer.Option(
        False, help="an id with different texts in one dump: keep each text as a new version (row order)"),
    json_output: bool = typer.Option(False, "--json", help="print one JSON line per dump instead of text"),
    wait_s: float = typer.Option(60.0, "--wait-s", min=0.0, help="how long to wait while a writer holds the store "
                                 "(an extraction holds it only while it writes a batch) (s)"),
) -> None:
    """Load report dumps into the store's `reports` table.

    Each dump is one transaction: a bad dump stores nothing. Ingesting the same dump again changes nothing;
    a changed text for a known id becomes a new version. Report text is never printed. Each dump is read and
    checked before the store is opened, so an extraction running meanwhile is held up only by the write.
    """
    config = IngestConfig(
        id_column=id_column, text_column=text_column, sheet=sheet, delimiter=delimiter, encoding=encoding,
        fallback_encoding=fallback_encoding, max_chars=max_chars, skip_bad_rows=skip_bad_rows,
        allow_changed_duplicates=allow_changed_duplicates,
    )
    missing = [str(p) for p in dumps if not p.exists()]
    if missing:
        fail(f"{missing[0]}: no such file or folder")
    try:
        for path in dumps:
            dump = load_dump(path, config)
            with Store(db or default_db_path(), wait_s=wait_s) as store:
                r = store_dump(store, dump)
            s = r.stats
            encoding = ", ".join(r.encodings) + (" (guessed)" if r.encoding_guessed else "")
            if r.n_over_extract_limit:
                typer.echo(f"{path}: {r.n_over_extract_limit} reports are longer than {MAX_REPORT_CHARS:,} characters; "
                           "rsuper extract fails them unless --max-report-chars is raised", err=True)
            if json_output:
                typer.echo(json.dumps({
                    "file": str(path), "rows": r.rows_read, "new": s.new, "unchanged": s.unchanged,
                    "new_versions": s.new_versions, "duplicates_in_dump": s.duplicates_in_dump,
                    "skipped": [vars(b) for b in r.skipped], "id_column": r.id_column,
                    "text_column": r.text_column, "encodings": r.encodings,
                    "encoding_guessed": r.encoding_guessed, "over_extract_limit": r.n_over_extract_limit,
                }))
                continue
            typer.echo(f"{path}: {r.rows_read} rows ({encoding}; id '{r.id_column}', text '{r.text_column}'): "
                       f"{s.new} new, {s.new_versions} new versions, {s.unchanged} unchanged, "
                       f"{s.duplicates_in_dump} duplicates in the dump, {len(r.skipped)} skipped")
            for bad in r.skipped[:20]:
                typer.echo(f"  skipped {bad.row}, column '{bad.column}': {bad.problem}")
            if len(r.skipped) > 20:
                typer.echo(f"  ... and {len(r.skipped) - 20} more skipped rows (see --json)")
    except (IngestError, StoreError) as exc:
        fail(str(exc))
