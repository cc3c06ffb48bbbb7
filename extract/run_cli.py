"""`rsuper extract` and `rsuper demo`: run the LLM over ingested reports; the one-command demo."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from enum import Enum
from functools import partial
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any, Optional

import typer

from extract.backends import BackendConfigError, BackendName, build_backend
from extract.backends.base import MAX_REPORT_CHARS, Backend, SamplingConfig
from extract.cli_errors import fail
from extract.ray_engine import RayConfig

#: Found as a package resource so an installed wheel has it too (`rsuper/data` links into the top-level `data/`).
DEMO_DUMP = files("rsuper") / "data" / "demo_reports.csv"

EXAMPLE_SQL = """\
-- per-organ summary of every extracted report
SELECT * FROM organ_summary WHERE state <> 'not_mentioned' ORDER BY report_id, organ;
-- one row per report in the R-Super per-CT layout
SELECT report_id, liver_lesion_count, liver_largest_diameter_cm, no_lesion FROM ct_summary;
-- measured tumors with their sub-segments
SELECT report_id, organ, laterality, segments, largest_diameter_mm, lesion_type FROM tumors WHERE size_known;
-- outcome and cost of each run
SELECT run_id, backend, model_id, prompt_id, n_ok, n_repaired, n_failed FROM extraction_runs;
SELECT status, count(*), avg(output_tokens) FROM extractions GROUP BY status;"""


def _backend(backend: BackendName, **settings: Any) -> Backend:
    """`build_backend`, its configuration errors shown as a bad command-line option."""
    try:
        return build_backend(backend, **settings)
    except BackendConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"--{exc.setting}") from exc


def _print_stats(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary))
        return
    rate = summary["reports_per_s"]
    typer.echo(
        f"extracted {summary['ok'] + summary['repaired'] + summary['failed']} of {summary['pending']} pending "
        f"reports: {summary['ok']} ok, {summary['repaired']} repaired, {summary['failed']} failed"
        + (" (interrupted)" if summary["interrupted"] else ""), err=True)
    def shown(value: Any) -> str:
        return "-" if value is None else str(value)

    unanswered = f", {summary['unanswered_calls']} unanswered" if summary["unanswered_calls"] else ""
    typer.echo(
        f"  {shown(rate)} reports/s, {shown(summary['calls_per_report'])} calls/report{unanswered}, "
        f"{shown(summary['prompt_tokens_per_report'])} prompt + {shown(summary['output_tokens_per_report'])} "
        f"output tokens/report, run {summary['run_id']}", err=True)
    if summary.get("reconverted"):
        typer.echo(_reconvert_line(summary), err=True)
    earlier_failed = summary["failed_in_store"] - summary["failed"]
    if earlier_failed > 0:
        typer.echo(f"  {earlier_failed} reports failed in earlier runs under this key; --retry-failed retries them",
                   err=True)
    for run_id in summary["killed_runs"]:
        typer.echo(f"  run {run_id} had been killed before it finished; marked 'killed' in extraction_runs", err=True)
    if summary["left_pending"]:
        why = f"stopped: {summary['outage']}" if summary["outage"] else "the server did not answer for them"
        typer.echo(f"  {summary['left_pending']} reports left pending ({why}); run the command again to extract "
                   "exactly those", err=True)


def _run_key(store: Any, prefix: str) -> str:
    """The one run key of `store` starting with `prefix`."""
    keys = [k for (k,) in store.con.execute(
        "SELECT DISTINCT config_hash FROM extractions WHERE starts_with(config_hash, $p)", {"p": prefix}).fetchall()]
    if len(keys) != 1:
        fail(f"--config-hash {prefix}: {'no' if not keys else len(keys)} stored run keys start with it")
    return keys[0]


def _reconvert_line(summary: dict[str, Any]) -> str:
    failed, recovered = summary["reconvert_failed"], summary["reconvert_recovered"]
    return (f"  converted {summary['reconverted']} stored answers again with the rules in force "
            f"({summary['reconvert_s']} s): {summary['reconvert_changed']} changed"
            + (f", {failed} no longer valid (now failed; --retry-failed asks the LLM again)" if failed else "")
            + (f", {recovered} failed ones now valid" if recovered else ""))


class Engine(str, Enum):
    direct = "direct"
    ray = "ray"


def _usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one, as in containers)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def register(app: typer.Typer) -> None:
    @app.command("extract")
    def extract_cmd(
        db: Optional[Path] = typer.Option(None, "--db", help="DuckDB store (default $RSUPER_DB or data/rsuper.duckdb)"),
        backend: BackendName = typer.Option(BackendName.local, "--backend", help="openai | vllm | local"),
        llm_url: list[str] = typer.Option([], "--llm-url", help="OpenAI-compatible base URL; repeat to balance"),
        model: Optional[str] = typer.Option(None, "--model", help="served model / vLLM model / embedded model key"),
        model_path: Optional[Path] = typer.Option(None, "--model-path", help="local backend: a GGUF file"),
        model_revision: str = typer.Option("", "--model-revision", help="recorded in the run key"),
        quantization: str = typer.Option("", "--quantization", help="recorded in the run key"),
        prompt: Optional[Path] = typer.Option(None, "--prompt", help="prompt template (default prompts/extract_v3.yaml)"),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="at most this many pending reports"),
        concurrency: int = typer.Option(64, "--concurrency", min=1, help="openai: requests in flight"),
        max_tokens: int = typer.Option(SamplingConfig.model_fields["max_tokens"].default, "--max-tokens", min=16,
                                       help="output tokens per call"),
        temperature: float = typer.Option(0.0, "--temperature", min=0.0),
        seed: int = typer.Option(0, "--seed"),
        timeout: float = typer.Option(300.0, "--timeout", help="openai: read timeout per request (s)"),
        retries: int = typer.Option(4, "--retries", min=0, help="openai: retries after transport errors"),
        outage: float = typer.Option(120.0, "--outage-s", min=0.001,
                                     help="stop when no call was answered for this long (s); the rest stay pending"),
        threads: int = typer.Option(1, "--threads", min=1, help="local: CPU threads"),
        answer_processes: Optional[int] = typer.Option(
            None, "--answer-processes", min=0,
            help="direct: processes validating answers beside the HTTP loop (0: none; default: one per two cores, "
                 "2 to 4, with 32 or more requests in flight on 2 or more cores)"),
        max_report_chars: int = typer.Option(
            MAX_REPORT_CHARS, "--max-report-chars", min=100,
            help="longer reports fail without a call (the prompt must fit the model's context)"),
        retry_failed: bool = typer.Option(False, "--retry-failed", help="re-extract reports that failed"),
        reconvert: bool = typer.Option(True, "--reconvert/--no-reconvert",
                                       help="first convert again the stored answers that other conversion rules "
                                            "made (an upgrade of rsuper); no LLM call"),
        log_text: bool = typer.Option(False, "--log-text", help="log report text of failures (PHI)"),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
        as_json: bool = typer.Option(False, "--json", help="print the run summary as JSON on stdout"),
        engine: Engine = typer.Option(Engine.direct, "--engine",
                                      help="direct: this process calls the backend; ray: Ray Data, one backend "
                                           "replica per worker, results as Parquet shards merged into the store"),
        ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                                  help="ray: cluster address ('auto'); default: a local cluster"),
        ray_workers: int = typer.Option(RayConfig.model_fields["workers"].default, "--ray-workers", min=1,
                                        help="ray: backend replicas"),
        ray_cpus: float = typer.Option(RayConfig.model_fields["cpus_per_worker"].default, "--ray-cpus-per-worker",
                                       min=0.01, help="ray: CPUs per replica"),
        ray_gpus: float = typer.Option(0.0, "--ray-gpus-per-worker", min=0.0, help="ray: GPUs per replica"),
        block_reports: int = typer.Option(RayConfig.model_fields["block_reports"].default, "--block-reports",
                                          min=1, help="ray: distinct report texts per block and shard"),
        shard_dir: Optional[Path] = typer.Option(None, "--shard-dir", help="ray: shard folder (default <db>.shards)"),
    ) -> None:
        """Run the LLM over every report not yet extracted under the current run key. Exit codes: 0 every report
        has a usable result, 3 some failed (in this run or an earlier one), 4 some left pending (no answer, or an
        outage stopped the run), 5 interrupted (SIGINT/SIGTERM). Report text is never printed or logged."""
        from extract.engine import EngineConfig, exit_code, run_extract
        from extract.store import default_db_path

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        store_path = db or default_db_path()
        if not store_path.exists():  # opening it for writing would create an empty store and extract nothing
            fail(f"{store_path}: no such database; create it with `rsuper ingest DUMP --db {store_path}`")
        settings = dict(urls=llm_url, model=model, model_path=model_path, model_revision=model_revision,
                        quantization=quantization, concurrency=concurrency, timeout_s=timeout, retries=retries,
                        threads=threads)
        b = _backend(backend, **settings)  # also checks the settings before anything starts
        sampling = SamplingConfig(temperature=temperature, max_tokens=max_tokens, seed=seed)
        if engine is Engine.ray:
            from extract.ray_engine import run_ray_extract

            factory = partial(build_backend, backend, **settings)  # each worker builds its own replica
            config = EngineConfig(limit=limit, retry_failed=retry_failed, log_text=log_text, progress=progress,
                                  outage_s=outage, max_report_chars=max_report_chars, reconvert=reconvert)
            ray_config = RayConfig(address=ray_address, workers=ray_workers, cpus_per_worker=ray_cpus,
                                   gpus_per_worker=ray_gpus, block_reports=block_reports, shard_dir=shard_dir)
            summary = run_ray_extract(db, factory, prompt_path=prompt, sampling=sampling, config=config,
                                      ray_config=ray_config)
        else:
            summary = run_extract(db, b, prompt_path=prompt, sampling=sampling, limit=limit,
                                  retry_failed=retry_failed, log_text=log_text, progress=progress, outage_s=outage,
                                  max_report_chars=max_report_chars, answer_processes=answer_processes,
                                  reconvert=reconvert)
        _print_stats(summary, as_json)
        raise typer.Exit(exit_code(summary))

    @app.command("reconvert")
    def reconvert_cmd(
        db: Optional[Path] = typer.Option(None, "--db", help="DuckDB store (default $RSUPER_DB or data/rsuper.duckdb)"),
        config_hash: Optional[str] = typer.Option(None, "--config-hash",
                                                  help="only this run key (a prefix of extraction_runs.config_hash)"),
        batch: int = typer.Option(2000, "--batch", min=1, help="extractions per transaction"),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
        as_json: bool = typer.Option(False, "--json", help="print the summary as JSON on stdout"),
    ) -> None:
        """Convert the stored LLM answers again with this rsuper's conversion rules, where other rules made their
        tumor and organ rows (after an upgrade): no LLM call, one transaction per batch, resumable. An answer the
        rules in force reject becomes failed (`rsuper extract --retry-failed` asks the LLM again)."""
        from extract.reconvert import reconvert_store
        from extract.store import Store, StoreError, default_db_path

        store_path = db or default_db_path()
        if not store_path.exists():
            fail(f"{store_path}: no such database")
        try:
            with Store(store_path, wait_s=60.0) as store, store.job_lock("extract"):
                full_hash = _run_key(store, config_hash) if config_hash else None
                stats = reconvert_store(store, full_hash, batch=batch, progress=progress)
        except StoreError as exc:
            fail(str(exc))
        summary = stats.summary()
        if as_json:
            typer.echo(json.dumps(summary))
        else:
            typer.echo(_reconvert_line(summary).strip(), err=True)

    @app.command("demo")
    def demo_cmd(
        db: Optional[Path] = typer.Option(None, "--db", help="DuckDB store (default $RSUPER_DB or data/rsuper.duckdb)"),
        dump: Optional[Path] = typer.Option(None, "--dump", help="report dump to ingest (default: the bundled demo)"),
        model: Optional[str] = typer.Option(None, "--model", help="embedded model key"),
        model_path: Optional[Path] = typer.Option(None, "--model-path", help="a GGUF file"),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="extract at most this many reports"),
        show: int = typer.Option(3, "--show", min=0, help="reports whose organ summary is printed"),
        threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                              help="CPU threads (default: the cores this process may use, up to 8)"),
    ) -> None:
        """Ingest the demo dump, extract it with the embedded model, print a few summaries and example SQL."""
        from extract.engine import run_extract
        from extract.ingest import ingest_dump
        from extract.store import Store

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        # Built (not started) first: a bad --model or --model-path is refused before anything is ingested.
        b = _backend(BackendName.local, urls=[], model=model, model_path=model_path, model_revision="",
                     quantization="", concurrency=1, timeout_s=300.0, retries=0,
                     threads=threads or min(8, _usable_cores()))
        # as_file: a real file even where the package is not a plain folder.
        with Store(db) as store, (as_file(DEMO_DUMP) if dump is None else contextlib.nullcontext(dump)) as path:
            result = ingest_dump(store, path)
            db_path = store.path
        typer.echo(f"ingested {result.rows_read} rows from {path.name}: {result.stats.new} new reports", err=True)
        summary = run_extract(db_path, b, prompt_path=None, sampling=SamplingConfig(), limit=limit,
                              retry_failed=False, log_text=False, progress=True)
        _print_stats(summary, as_json=False)
        with Store(db_path, read_only=True) as store:
            shown = store.query(
                f"""SELECT report_id FROM organ_summary GROUP BY report_id
                    ORDER BY count(*) FILTER (WHERE state = 'lesion') DESC, report_id LIMIT {int(show)}"""
            ).column("report_id").to_pylist()
            for report_id in shown:
                rows = store.query(
                    f"""SELECT organ, state, lesion_count, largest_diameter_mm, largest_location, largest_attenuation
                        FROM organ_summary WHERE report_id = '{str(report_id).replace("'", "''")}'
                        AND state <> 'not_mentioned' ORDER BY organ""").to_pylist()
                typer.echo(f"\nreport {report_id}:")
                for r in rows:
                    size = f"{r['largest_diameter_mm']:g} mm" if r["largest_diameter_mm"] is not None else "-"
                    typer.echo(f"  {r['organ']:<14} {r['state']:<10} count={r['lesion_count']} largest={size} "
                               f"at={r['largest_location'] or '-'} {r['largest_attenuation'] or ''}")
        typer.echo(f"\nExplore further: rsuper query \"<SQL>\" --db {db_path}\n{EXAMPLE_SQL}")
