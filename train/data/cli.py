"""`rsuper phantoms`, `rsuper cases` and `rsuper organs`. No torch / MONAI at import time (the commands import what they need)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from extract.cli_errors import fail, make_folder, os_problem


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
        from train.config import ConfigError, validate_config
        from train.data.phantoms import PhantomConfig, write_phantom_set

        try:
            config = validate_config(PhantomConfig, dict(n=n, seed=seed, shape=shape,
                                                          flip_probability=flip_probability), "rsuper phantoms")
        except ConfigError as exc:
            fail(str(exc))
        make_folder(out)
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
        except OSError as exc:  # FileNotFoundError("<root>: no cases found") too
            fail(os_problem(exc))
        except ValueError as exc:  # LabelFileError too; the message names the file
            fail(str(exc))
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

    @app.command("organs")
    def organs(
        root: Path = typer.Argument(..., help="Case folders ROOT/<case>/ct.nii.gz (or ROOT/cases/<case>/)."),
        config_file: Optional[Path] = typer.Option(None, "--config", help="YAML with OrgansConfig fields; the "
                                                   "options below override it."),
        source: Optional[str] = typer.Option(None, help="auto | segmentations | label_map | totalsegmentator "
                                             "(default auto: segmentations/ when present, else --label-map, else "
                                             "TotalSegmentator)."),
        segmentations_dir: Optional[str] = typer.Option(None, help="Folder in each case with one mask file per "
                                                        "class (default segmentations)."),
        label_map: Optional[str] = typer.Option(None, "--label-map", help="File name of one label map in each case."),
        label_names: Optional[Path] = typer.Option(None, "--label-names", help="Label-name file of --label-map."),
        liver_segments: Optional[bool] = typer.Option(None, "--liver-segments/--no-liver-segments",
                                                      help="Also run TotalSegmentator's liver_segments task."),
        fast: Optional[bool] = typer.Option(None, "--fast/--no-fast", help="TotalSegmentator --fast (3 mm)."),
        device: Optional[str] = typer.Option(None, help="TotalSegmentator --device: gpu, cpu, mps, gpu:N."),
        executable: Optional[str] = typer.Option(None, help="The TotalSegmentator program (default on PATH)."),
        derive_subsegments: Optional[bool] = typer.Option(None, "--derive-subsegments/--no-derive-subsegments",
                                                          help="Derive kidney sides, pancreas head/body/tail."),
        lesion_mask: Optional[bool] = typer.Option(None, "--lesion-mask/--no-lesion-mask", help="Write lesion "
                                                   "classes to lesions.nii.gz (reviewed annotations only)."),
        overwrite: Optional[bool] = typer.Option(None, "--overwrite/--no-overwrite", help="Redo finished cases."),
    ) -> None:
        """Map organ masks (TotalSegmentator's, or made elsewhere) onto the label map `rsuper cases` reads."""
        from train.config import ConfigError, read_yaml_mapping, validate_config
        from train.data.labels import LabelFileError
        from train.data.organs import OrgansConfig, run_organs
        from train.data.totalsegmentator import TotalSegmentatorError

        given = {k: v for k, v in dict(
            source=source, segmentations_dir=segmentations_dir, label_map=label_map, label_names=label_names,
            liver_segments=liver_segments, fast=fast, device=device, executable=executable,
            derive_subsegments=derive_subsegments, lesion_mask=lesion_mask, overwrite=overwrite).items()
            if v is not None}
        try:
            from_file = read_yaml_mapping(config_file) if config_file else {}
            config = validate_config(OrgansConfig, {**from_file, **given}, str(config_file or "options"))
            result = run_organs(root, config, progress=lambda case, masks: typer.echo(
                f"{case}: {len(masks.mapped)} classes mapped, {len(masks.ignored)} ignored", err=True))
        except OSError as exc:
            fail(os_problem(exc))
        except (ConfigError, LabelFileError, TotalSegmentatorError) as exc:
            fail(str(exc))
        for case, message in result.problems:
            typer.echo(f"problem: {case}: {message}", err=True)
        if result.ignored:
            typer.echo(f"ignored (no organ key): {', '.join(sorted(result.ignored))}", err=True)
        if result.folded:
            typer.echo(f"lesion classes joined their organ only (no lesion mask): {', '.join(sorted(result.folded))}",
                       err=True)
        typer.echo(json.dumps({"written": len(result.written), "skipped_done": len(result.skipped),
                               "problems": len(result.problems), "ignored_classes": len(result.ignored)}))
