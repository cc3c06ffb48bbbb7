"""`rsuper audit` (model versus report, per CT, into the `audit` table, a CSV and case pages) and `rsuper al-round`
(the CTs to annotate next). No torch at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from extract.cli_errors import fail, make_folder

_SET_HELP = "Override an audit setting, dotted (repeatable): --set size_tolerance=0.3 --set weights.count_mismatch=1"
_SHOWN = 10  # rows of the ranking printed; the table and the CSV have them all


def register(app: typer.Typer) -> None:
    """Add the review commands to the `rsuper` app."""
    app.command("audit")(audit)
    app.command("al-round")(al_round)


def _ct_reports(cases_root: Optional[Path], db: Optional[Path]) -> dict[str, str]:
    """ct_id -> report_id: ``case_reports.csv`` of the case root, else the store's `cases` table."""
    from train.evaluate import read_mapping

    if cases_root is not None:
        path = cases_root / "case_reports.csv"
        if path.is_file():
            try:
                return read_mapping(path)
            except (ValueError, KeyError, UnicodeDecodeError) as exc:
                fail(f"{path}: {exc}")
    from extract.store import Store, default_db_path

    path = db or default_db_path()
    if not Path(path).is_file():
        fail(f"no CT -> report mapping: {cases_root or '--cases'} has no case_reports.csv and {path} does not exist "
             "(give --cases ROOT, or run `rsuper cases` first)")
    with Store(path, read_only=True) as store:
        rows = store.query("SELECT ct_id, report_id FROM cases WHERE report_id IS NOT NULL").to_pylist()
    if not rows:
        fail(f"{path}: the `cases` table maps no CT to a report (run `rsuper cases ... --map`, or give --cases ROOT "
             "with case_reports.csv)")
    return {r["ct_id"]: r["report_id"] for r in rows}


def _records(source: str, cases_root: Optional[Path], db: Optional[Path], report_ids: list[str]) -> dict:
    from train.data.records import load_case_records, records_from_ground_truth

    if source == "truth":
        path = (cases_root or Path(".")) / "ground_truth.jsonl"
        if not path.is_file():
            fail(f"{path}: no such file (--records truth reads the phantom ground truth of --cases ROOT)")
        try:
            return records_from_ground_truth(path)
        except ValueError as exc:
            fail(str(exc))
    from extract.store import Store, default_db_path

    path = db or default_db_path()
    if not Path(path).is_file():
        fail(f"{path}: no such database (--records store reads the extracted records; run `rsuper extract`, or "
             "use --records truth for phantoms)")
    with Store(path, read_only=True) as store:
        try:
            return load_case_records(store, report_ids)
        except ValueError as exc:
            fail(f"{path}: {exc}")


def audit(
    predictions: Path = typer.Argument(..., help="Output folder of `rsuper predict` (<ct_id>/summary.json ...)."),
    cases: Optional[Path] = typer.Option(None, "--cases", help="Case root: case_reports.csv (ct_id, report_id), "
                                         "<id>/organs.nii.gz with sub-segments, ground_truth.jsonl for phantoms."),
    records: str = typer.Option("store", help="Report records: store (extracted, --db) or truth (phantoms)."),
    db: Optional[Path] = typer.Option(None, "--db", envvar="RSUPER_DB", help="DuckDB store: records (--records "
                                      "store) and the `audit` table written (default data/rsuper.duckdb)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where audit.csv and the case pages go (default: "
                                       "the predictions folder)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file with AuditConfig fields."),
    set_: list[str] = typer.Option([], "--set", help=_SET_HELP),
    pages: int = typer.Option(100, "--pages", min=0, help="Case pages for this many CTs, highest score first "
                              "(the index lists every CT); 0: no pages."),
    show_report_text: bool = typer.Option(False, "--show-report-text", help="Put the report text on the case "
                                          "pages (PHI: off by default, the pages show records only)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes auditing CTs side by side (reading and "
                                "decompressing the predictions is most of the time)."),
) -> None:
    """Compare each predicted CT with its report: disagreement score and reasons per CT, into the store's `audit`
    table, OUT/audit.csv and case pages (OUT/pages/index.html). Auditing again replaces those CTs' rows.

    A CT's report is found through case_reports.csv of --cases, else the store's `cases` table; its sub-segments
    through --cases ROOT/<id>/organs.nii.gz, else the predicted organs (kidney sides and pancreas parts derived)."""
    from extract.store import Store
    from train.config import ConfigError
    from train.review.config import load_audit_config
    from train.review.files import PredictionError, audit_predictions, prediction_folders, write_audit_csv
    from schemas.tables import audit_table

    if records not in ("store", "truth"):
        raise typer.BadParameter(f"{records!r}: expected store or truth", param_hint="--records")
    try:
        cfg = load_audit_config(config, list(set_))
    except ConfigError as exc:
        fail(str(exc))
    if not prediction_folders(predictions):
        fail(f"{predictions}: no */summary.json (run `rsuper predict` first)")
    if cases is not None and not cases.is_dir():
        fail(f"{cases}: {'not a folder' if cases.exists() else 'no such folder'} (--cases: the case root)")
    dest = out or predictions
    make_folder(dest)
    mapping = _ct_reports(cases, db)
    recs = _records(records, cases, db, sorted(set(mapping.values())))
    organ_names = None
    if cases is not None:
        from train.data.cases import discover

        try:
            organ_names = discover(cases).organ_label_names
        except (OSError, ValueError):  # a case root without label files: organs come from the prediction
            organ_names = None
    try:
        results, skipped = audit_predictions(
            predictions, lambda ct: recs.get(mapping.get(ct, "")), cfg, cases_root=cases, organ_names=organ_names,
            progress=True, workers=workers)
    except PredictionError as exc:
        fail(str(exc))
    if not results:
        fail(f"{predictions}: none of its {len(skipped)} CTs has a report record (check the CT -> report mapping "
             f"and --records)")
    rows = [r.audit for r in results]
    with Store(db) as store:
        store.write_audit(audit_table(rows))
    csv_path = write_audit_csv(rows, dest / "audit.csv")
    written = [str(csv_path)]
    if pages:
        from train.review.files import page_arrays
        from train.review.pages import write_pages

        text_of = _report_texts(db, [r.audit.report_id for r in results[:pages]]) if show_report_text else None
        written.append(str(write_pages(results, dest / "pages", arrays_of=lambda r: page_arrays(r, organ_names),
                                       max_pages=pages, report_text_of=text_of, progress=True)))
    typer.echo(f"{'score':>7}  {'ct_id':<20} reasons")
    for r in rows[:_SHOWN]:
        typer.echo(f"{r.score:>7.2f}  {r.ct_id:<20} {', '.join(x.value for x in r.reasons) or '-'}")
    typer.echo(f"audited {len(rows)} CTs ({sum(r.score > 0 for r in rows)} disagree), {len(skipped)} without a "
               f"report record; `audit` table in {db or 'data/rsuper.duckdb'}; written: {', '.join(written)}")


def _report_texts(db: Optional[Path], report_ids: list) -> dict[str, str]:
    from extract.store import Store

    with Store(db, read_only=True) as store:
        rows = store.query("SELECT report_id, text FROM latest_reports").to_pylist()
    wanted = set(report_ids)
    return {r["report_id"]: r["text"] for r in rows if r["report_id"] in wanted}


def al_round(
    k: int = typer.Option(..., "--k", min=1, help="CTs to annotate in this round."),
    strategy: str = typer.Option("disagreement", help="disagreement (top-k audit scores) or random (the control)."),
    db: Optional[Path] = typer.Option(None, "--db", envvar="RSUPER_DB", help="DuckDB store with the `audit` table."),
    exclude: Optional[Path] = typer.Option(None, "--exclude", help="A file of ct_ids (one a line) that already have "
                                           "masks, never chosen again."),
    seed: int = typer.Option(0, help="Seed of the random strategy."),
    out: Path = typer.Option(Path("al_round.csv"), "--out", "-o", help="The chosen CTs (rank, ct_id, score, reasons)."),
) -> None:
    """Choose the CTs whose masks to draw next: the k with the largest audit score (model and report disagree
    most), or k at random for comparison. Writes OUT, one row per CT."""
    from extract.store import Store, default_db_path
    from train.review.active import choose, write_selection

    if strategy not in ("disagreement", "random"):
        raise typer.BadParameter(f"{strategy!r}: expected disagreement or random", param_hint="--strategy")
    path = db or default_db_path()
    if not Path(path).is_file():
        fail(f"{path}: no such database (run `rsuper audit` first)")
    done: set[str] = set()
    if exclude is not None:
        try:
            done = {line.strip() for line in exclude.read_text(encoding="utf-8").splitlines() if line.strip()}
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"{exclude}: cannot read the ct_id list ({getattr(exc, 'strerror', None) or exc})")
    with Store(path, read_only=True) as store:
        rows = store.query("SELECT ct_id, score, reasons FROM audit").to_pylist()
    if not rows:
        fail(f"{path}: the `audit` table is empty (run `rsuper audit` first)")
    chosen = choose(rows, k, strategy, seed=seed, exclude=done)
    make_folder(out.parent if str(out.parent) else Path("."))
    write_selection(chosen, out)
    typer.echo(f"chose {len(chosen)} of {len(rows) - len(done & {r['ct_id'] for r in rows})} CTs by {strategy}: "
               f"{out}")
