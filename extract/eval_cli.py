"""`rsuper eval-extraction` (accuracy against an organ-summary gold file) and `rsuper convert-gold`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from extract import evaluation as ev
from extract.backends import BackendConfigError
from extract.backends.base import SamplingConfig
from extract.cli_errors import fail, make_folder

DEFAULT_OUT_DIR = Path("build") / "eval"


def register(app: typer.Typer) -> None:
    app.command("eval-extraction")(eval_extraction)
    app.command("convert-gold")(convert_gold)


def _work_db(gold: Path, subset: Optional[Path], limit: Optional[int]) -> Path:
    """One working store per gold selection, so the engine extracts exactly the selected reports."""
    name = gold.stem + (f"-{subset.stem}" if subset else "") + (f"-first{limit}" if limit else "")
    return DEFAULT_OUT_DIR / f"{name}.duckdb"


def _run_engine(reports: list, db: Path, backend: str, *, model: Optional[str], llm_url: list[str],
                model_path: Optional[Path], threads: int, max_tokens: int, prompt: Optional[Path]) -> dict:
    try:
        from extract.backends import build_backend
    except ImportError as exc:
        raise ev.EngineUnavailable(f"the extraction engine cannot be imported ({exc})") from exc
    b = build_backend(backend, urls=llm_url, model=model, model_path=model_path, model_revision="", quantization="",
                      concurrency=8, timeout_s=300.0, retries=2, threads=threads)
    return ev.extract_gold(reports, db, b, sampling=SamplingConfig(max_tokens=max_tokens), prompt_path=prompt,
                           progress=True)


def eval_extraction(
    gold: Path = typer.Argument(..., help="gold JSONL: id, report, organs (organ-summary shape)"),
    backend: Optional[str] = typer.Option(
        None, help="run extraction on the gold reports with this backend (local | openai | vllm)"),
    model: Optional[str] = typer.Option(None, help="--backend: served model / vLLM model / embedded model key"),
    llm_url: list[str] = typer.Option([], help="--backend openai: OpenAI-compatible base URL (repeatable)"),
    model_path: Optional[Path] = typer.Option(None, help="--backend local: a GGUF file"),
    threads: int = typer.Option(1, min=1, help="--backend local: CPU threads"),
    max_tokens: int = typer.Option(
        SamplingConfig.model_fields["max_tokens"].default, min=16, help="--backend: output tokens per call"),
    prompt: Optional[Path] = typer.Option(None, help="--backend: prompt template (default prompts/extract_v3.yaml)"),
    predictions: Optional[Path] = typer.Option(None, help="read predictions from an organ-summary JSONL file"),
    db: Optional[Path] = typer.Option(
        None, help="store to read results from (default $RSUPER_DB or data/rsuper.duckdb); with --backend, the "
        "working store the gold reports are extracted into (default build/eval/<gold>[-<subset>].duckdb)"),
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
        fail("give at most one of --backend and --predictions")
    out = out if out is not None else DEFAULT_OUT_DIR / f"{gold.stem}.json"
    if out.is_dir():
        fail(f"{out}: is a folder; give the JSON file to write with --out")
    try:
        ids = ev.load_id_list(subset) if subset is not None else None
        reports = ev.load_gold(gold, ids)
        if limit is not None:
            reports = reports[:limit]
        make_folder(out.parent)  # before the extraction: an unusable --out costs nothing
        if backend is not None:
            work_db = db if db is not None else _work_db(gold, subset, limit)
            summary = _run_engine(reports, work_db, backend, model=model, llm_url=llm_url, model_path=model_path,
                                  threads=threads, max_tokens=max_tokens, prompt=prompt)
            typer.echo(f"extraction into {work_db}: {summary.get('ok')} ok, {summary.get('repaired')} repaired, "
                       f"{summary.get('failed')} failed", err=True)
            preds = ev.predictions_from_store(work_db, [r.id for r in reports])
            source = f"backend:{backend} store:{work_db}"
        elif predictions is not None:
            preds = ev.predictions_from_jsonl(predictions)
            source = f"file:{predictions}"
        else:
            from extract.store import StoreError, default_db_path

            path = db if db is not None else default_db_path()
            try:
                preds = ev.predictions_from_store(path, [r.id for r in reports])
            except StoreError as exc:
                fail(str(exc))
            source = f"store:{path}"
    except ev.GoldError as exc:
        fail(str(exc))
    except (ev.EngineUnavailable, BackendConfigError) as exc:
        fail(str(exc))

    result = ev.evaluate(reports, preds)
    result = {"gold": str(gold), "source": source, "subset": str(subset) if subset else None,
              "targets": ev.check_targets(result), **result}
    typer.echo(ev.format_table(result))
    for item in result["mismatches"][:mismatches]:
        typer.echo(f"  {item['id']} {item['organ']} {item['metric']}: gold {item['gold']!r} pred {item['pred']!r}")
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
    except ev.GoldError as exc:  # unreadable input, a bad line, or an output that cannot be written
        fail(str(exc))
    typer.echo(f"wrote {n} gold lines to {out}")
