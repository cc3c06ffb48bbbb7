"""`rsuper eval-extraction` (accuracy against an organ-summary gold file) and `rsuper convert-gold`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from extract import evaluation as ev

DEFAULT_OUT_DIR = Path("build") / "eval"


def register(app: typer.Typer) -> None:
    app.command("eval-extraction")(eval_extraction)
    app.command("convert-gold")(convert_gold)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def eval_extraction(
    gold: Path = typer.Argument(..., help="gold JSONL: id, report, organs (organ-summary shape)"),
    backend: Optional[str] = typer.Option(
        None, help="run extraction on the gold reports with this backend (local | openai | vllm)"),
    model: Optional[str] = typer.Option(None, help="model name for --backend"),
    llm_url: Optional[str] = typer.Option(None, help="server URL for --backend openai"),
    predictions: Optional[Path] = typer.Option(None, help="read predictions from an organ-summary JSONL file"),
    db: Optional[Path] = typer.Option(
        None, envvar="RSUPER_DB", help="read stored results from this store (default data/rsuper.duckdb)"),
    subset: Optional[Path] = typer.Option(None, help="text file of gold ids to score (e.g. data/gold/ci_subset.txt)"),
    limit: Optional[int] = typer.Option(None, min=1, help="score only the first N gold reports"),
    out: Optional[Path] = typer.Option(None, help="JSON result file (default build/eval/<gold stem>.json)"),
    mismatches: int = typer.Option(0, min=0, help="print up to N mismatches (ids and fields, no report text)"),
    check_targets: bool = typer.Option(False, help="exit 1 when an accuracy target of issue 4 is not met"),
) -> None:
    """Field-level accuracy of the extraction against GOLD: lesion presence P/R/F1, count, diameter (+-1 mm),
    location, attenuation and failure rate, per organ and overall.

    Predictions come from --backend (extract now), --predictions (a file) or, by default, the store (--db),
    where the gold reports must have been ingested and extracted under their gold ids.
    """
    if sum(x is not None for x in (backend, predictions)) > 1:
        _fail("give at most one of --backend and --predictions")
    try:
        ids = ev.load_id_list(subset) if subset is not None else None
        reports = ev.load_gold(gold, ids)
        if limit is not None:
            reports = reports[:limit]
        if backend is not None:
            preds = ev.predictions_from_engine(reports, backend=backend, model=model, llm_url=llm_url)
            source = f"backend:{backend}"
        elif predictions is not None:
            preds = ev.predictions_from_jsonl(predictions)
            source = f"file:{predictions}"
        else:
            from extract.store import StoreError, default_db_path

            path = db if db is not None else default_db_path()
            try:
                preds = ev.predictions_from_store(path, [r.id for r in reports])
            except StoreError as exc:
                _fail(str(exc))
            source = f"store:{path}"
    except ev.GoldError as exc:
        _fail(str(exc))
    except ev.EngineUnavailable as exc:
        _fail(str(exc))

    result = ev.evaluate(reports, preds)
    result = {"gold": str(gold), "source": source, "subset": str(subset) if subset else None,
              "targets": ev.check_targets(result), **result}
    typer.echo(ev.format_table(result))
    for item in result["mismatches"][:mismatches]:
        typer.echo(f"  {item['id']} {item['organ']} {item['metric']}: gold {item['gold']!r} pred {item['pred']!r}")
    out = out if out is not None else DEFAULT_OUT_DIR / f"{gold.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    typer.echo(f"wrote {out}")
    if check_targets and any(c["met"] is False for c in result["targets"]):
        raise typer.Exit(1)


def convert_gold(
    cases: Path = typer.Argument(..., help="payload-shaped cases JSONL (id, report, expected ExtractionPayload)"),
    out: Path = typer.Argument(..., help="organ-summary gold JSONL to write (holds report text: keep it uncommitted)"),
) -> None:
    """Convert payload-shaped gold cases into the organ-summary gold shape through schemas.summary."""
    try:
        n = ev.convert_cases(cases, out)
    except (ev.GoldError, OSError) as exc:
        _fail(str(exc))
    typer.echo(f"wrote {n} gold lines to {out}")
