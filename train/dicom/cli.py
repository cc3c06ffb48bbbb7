"""`rsuper images import`: DICOM studies from a PACS export into NIfTI CTs and the `cases` table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from extract.cli_errors import fail, make_folder

_SET_HELP = "Override a config field, dotted (repeatable): --set series.min_slices=40 --set join_keys=[PatientID]"
_LISTED = 20  # unmatched reports printed; the manifest has them all


def register(app: typer.Typer) -> None:
    """Add the `images` command group to the `rsuper` app."""
    images = typer.Typer(help="CT images straight from PACS: DICOM in, NIfTI CTs and the `cases` table out.",
                         no_args_is_help=True)
    images.command("import")(import_images)
    app.add_typer(images, name="images")


def import_images(
    root: Path = typer.Argument(..., help="The PACS export: a folder of DICOM files in any layout."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset folder (cases/<ct_id>/ct.nii.gz, ...)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file with DicomImportConfig fields."),
    set_: list[str] = typer.Option([], "--set", help=_SET_HELP),
    db: Optional[Path] = typer.Option(None, "--db", envvar="RSUPER_DB",
                                      help="DuckDB store with the ingested reports (default data/rsuper.duckdb)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Scan, choose and join; convert and write nothing."),
) -> None:
    """Choose one CT series per study, convert it to NIfTI, join it to its report and fill the `cases` table.

    One `problem:` line per study that cannot be imported (file, study, reason); nothing of it is written.
    A second run converts only the studies not finished before. Organ masks come after (`rsuper organs`, then
    `rsuper cases OUT`); until then the cases have no organ mask.
    """
    from extract.store import default_db_path
    from train.config import ConfigError
    from train.dicom.config import load_import_config
    from train.dicom.importer import MANIFEST, import_dicom, stored_report_ids

    try:
        cfg = load_import_config(config, list(set_))
    except ConfigError as exc:
        fail(str(exc))
    if not root.is_dir():
        fail(f"{root}: not a folder (the PACS export to import)")
    if not dry_run:
        make_folder(out)
    report_ids = stored_report_ids(db)
    if report_ids is None:
        typer.echo(f"note: no store at {db or default_db_path()}: no study can be joined to a report "
                   "(run `rsuper ingest DUMP` first)", err=True)
        report_ids = set()
    result = import_dicom(root, out, cfg, report_ids, dry_run=dry_run, progress=True)
    for reason, paths in sorted(result.scan.skipped.items()):
        typer.echo(f"skipped {len(paths)} file(s): {reason} (e.g. {paths[0]})", err=True)
    if result.repeated_files:
        typer.echo(f"skipped {len(result.repeated_files)} file(s): the same SOPInstanceUID as an earlier file "
                   f"(e.g. {result.repeated_files[0]})", err=True)
    for s in result.failed:
        typer.echo(f"problem: {s.path}: study {s.study_uid} (accession {s.accession or '-'}): {s.reason}", err=True)
    for s in result.unmatched_studies:
        typer.echo(f"no report: study {s.study_uid} (accession {s.accession or '-'}) -> {s.ct_id}", err=True)
    for rid in result.reports_without_ct[:_LISTED]:
        typer.echo(f"no CT for report: {rid}", err=True)
    if len(result.reports_without_ct) > _LISTED:
        typer.echo(f"... and {len(result.reports_without_ct) - _LISTED} more reports without a CT "
                   f"(all in {out / MANIFEST})", err=True)
    written = False
    if result.cases is not None:
        for p in result.cases.problems:
            typer.echo(f"problem: {p.ct_id}: {p.field}: {p.message}", err=True)
        if result.cases.table.num_rows:
            from extract.store import Store

            with Store(db) as store:
                store.replace_cases(result.cases.table)
            written = True
    counts: dict[str, int] = {}
    for s in result.studies:
        counts[s.status] = counts.get(s.status, 0) + 1
    typer.echo(json.dumps({
        "files": result.scan.n_files,
        "skipped_files": sum(len(v) for v in result.scan.skipped.values()) + len(result.repeated_files),
        "studies": len(result.studies),
        **{status.replace(" ", "_"): n for status, n in sorted(counts.items())},
        "cases": result.cases.table.num_rows if result.cases is not None else None,
        "joined": sum(r is not None for r in result.cases.table.column("report_id").to_pylist())
        if result.cases is not None else None,
        "studies_without_report": len(result.unmatched_studies),
        "reports_without_ct": len(result.reports_without_ct),
        "cases_table_written": written,
    }))
