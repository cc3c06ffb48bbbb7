"""`rsuper phantoms` and `rsuper cases`. No torch / MONAI at import time (the commands import what they need)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the training-data commands to the `rsuper` app."""

    @app.command("phantoms")
    def phantoms(
        out: Path = typer.Argument(..., help="Output folder for the phantom set."),
        n: int = typer.Option(24, "--n", min=1, help="Number of cases."),
        seed: int = typer.Option(0, "--seed", help="Master seed (case i depends only on seed and i)."),
        shape: tuple[int, int, int] = typer.Option((96, 96, 64), "--shape", help="Voxels along i, j, k."),
        flip_probability: float = typer.Option(0.25, help="Chance a case is stored with flipped x/y axes."),
    ) -> None:
        """Write synthetic abdominal CT phantoms, masks, reports (reports.csv) and ground truth."""
        from train.data.phantoms import PhantomConfig, write_phantom_set

        config = PhantomConfig(n=n, seed=seed, shape=shape, flip_probability=flip_probability)
        summary = write_phantom_set(out, config, progress=True)
        typer.echo(json.dumps(summary))

    @app.command("cases")
    def cases(
        root: Path = typer.Argument(..., help="Dataset root: imagesTr/ + labelsTr/, or one folder per case."),
        mapping: Optional[Path] = typer.Option(None, "--map", help="CSV with columns ct_id, report_id [, split]."),
        labels: Optional[Path] = typer.Option(None, "--labels", help="Label-name file (default: found in ROOT)."),
        db: Optional[Path] = typer.Option(None, "--db", help="DuckDB store (default: RSUPER_DB or data/rsuper.duckdb)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Also write the table to this Parquet file."),
        val_fraction: float = typer.Option(0.1, help="Share of cases in the validation split (hash of ct_id)."),
        test_fraction: float = typer.Option(0.0, help="Share of cases in the test split."),
        check_values: bool = typer.Option(True, help="Read every mask to check its label values."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Check and report, write nothing."),
    ) -> None:
        """Build the `cases` table (CT <-> report) from image folders, checking every case."""
        from train.data.cases import build_cases

        if mapping is None and (root / "case_reports.csv").is_file():
            mapping = root / "case_reports.csv"
        try:
            result = build_cases(root, mapping, label_file=labels, val_fraction=val_fraction,
                                 test_fraction=test_fraction, check_values=check_values)
        except (FileNotFoundError, ValueError) as exc:  # LabelFileError too; the message names the file
            typer.echo(f"rsuper: error: {exc}", err=True)
            raise typer.Exit(2) from None
        for name in result.ignored_labels:
            typer.echo(f"ignored label: {name} (no organ key; read as background)", err=True)
        for p in result.problems:
            typer.echo(f"problem: {p.ct_id}: {p.field}: {p.message}", err=True)
        for ct in result.cts_without_report:
            typer.echo(f"no report: {ct}", err=True)
        for rid in result.reports_without_ct:
            typer.echo(f"no CT for report: {rid}", err=True)
        if not dry_run and result.table.num_rows:
            if out is not None:
                import pyarrow.parquet as pq

                pq.write_table(result.table, out)
            from extract.store import Store

            with Store(db) as store:
                store.replace_cases(result.table)
        typer.echo(json.dumps({
            "cases": result.table.num_rows,
            "problems": len(result.problems),
            "cts_without_report": len(result.cts_without_report),
            "reports_without_ct": len(result.reports_without_ct),
            "ignored_labels": len(result.ignored_labels),
            "written": not dry_run and result.table.num_rows > 0,
        }))
