"""LLM extraction of the science pool's reports: ``rsuper ingest`` + ``rsuper extract`` into one store per worker.

Extracted once (resumable, sharded over ``extract_workers`` processes with one store each) and read back as
CaseRecords for the ``masks_reports_extracted`` arm.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from train.science.protocol import ScienceSettings


def rsuper_command() -> list[str]:
    """The ``rsuper`` CLI of this interpreter's environment (the module when the script is not installed)."""
    exe = Path(sys.executable).parent / "rsuper"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "rsuper"]


def shard_stores(settings: ScienceSettings) -> list[Path]:
    return [settings.work_dir / "extract" / f"shard{k}.duckdb" for k in range(settings.extract_workers)]


def start_extraction(settings: ScienceSettings, pool: Path) -> list[subprocess.Popen]:
    """Ingest the pool's reports into one store per worker and start ``rsuper extract`` on each (background).

    Every shard holds every ``extract_workers``-th report. Ingest is idempotent and extract only takes reports
    without a result under the current run key, so rerunning costs nothing once done.
    """
    from train.data.phantoms import write_csv_atomic

    out = settings.work_dir / "extract"
    out.mkdir(parents=True, exist_ok=True)
    with (pool / "reports.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    procs = []
    for k, store in enumerate(shard_stores(settings)):
        shard_csv = out / f"shard{k}.csv"
        write_csv_atomic(shard_csv, header, [tuple(r) for r in body[k :: settings.extract_workers]])
        subprocess.run([*rsuper_command(), "ingest", str(shard_csv), "--db", str(store), "--json"], check=True,
                       stdout=subprocess.DEVNULL)
        log = (out / f"shard{k}.log").open("a")
        procs.append(subprocess.Popen(
            [*rsuper_command(), "extract", "--db", str(store), "--backend", "local", "--threads",
             str(settings.extract_threads), "--json", "--no-progress"],
            stdout=log, stderr=subprocess.STDOUT))
    return procs


def finish_extraction(procs: list[subprocess.Popen], started: float) -> float:
    """Wait for the extraction processes; returns the wall seconds since ``started``.

    Raises:
        RuntimeError: a process failed (its log is under work_dir/extract/).
    """
    from extract.engine import EXIT_FAILED_REPORTS

    for p in procs:
        if p.wait() not in (0, EXIT_FAILED_REPORTS):  # failed reports are part of what the arm measures
            raise RuntimeError(f"rsuper extract exited with {p.returncode}: see {p.args} log under work_dir/extract")
    return time.perf_counter() - started


def load_extracted_records(settings: ScienceSettings, report_ids: list[str]) -> dict:
    """report_id -> CaseRecords from the shard stores (reports whose extraction failed are absent)."""
    from extract.store import Store
    from train.data.records import load_case_records

    out: dict = {}
    for path in shard_stores(settings):
        with Store(path, read_only=True) as store:
            out.update(load_case_records(store, report_ids))
    return out


def extraction_cost(settings: ScienceSettings) -> dict[str, float | int]:
    """LLM time and output tokens of the stored current extractions (their own cost, whichever run made them)."""
    from extract.store import Store

    reports = seconds = tokens = 0.0
    for path in shard_stores(settings):
        with Store(path, read_only=True) as store:
            row = store.query("SELECT count(*) AS n, coalesce(sum(latency_s), 0) AS s, "
                              "coalesce(sum(output_tokens), 0)::DOUBLE AS t FROM current_extractions").to_pylist()[0]
        reports, seconds, tokens = reports + row["n"], seconds + row["s"], tokens + row["t"]
    return {"llm_seconds": round(seconds, 1), "llm_seconds_per_report": round(seconds / max(reports, 1), 1),
            "output_tokens_per_report": round(tokens / max(reports, 1))}


def extraction_summary_path(settings: ScienceSettings) -> Path:
    """Agreement with the truth of the last extraction (written when it finishes)."""
    return settings.work_dir / "extract" / "summary.json"


def stored_extraction_meta(settings: ScienceSettings) -> dict:
    """Agreement with the truth (from the last extraction) and the stored LLM cost, when the pool was extracted.

    The cost comes from the stores, not from this call's wall time (``extraction_wall_s``, ~0 when reused).
    """
    summary = extraction_summary_path(settings)
    if not summary.is_file():
        return {}
    return {**json.loads(summary.read_text()), "extraction_cost": extraction_cost(settings)}
