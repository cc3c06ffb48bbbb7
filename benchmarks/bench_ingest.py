"""Ingest and summary-query throughput of the store. Prints one JSON line per measurement.

1. Writes a synthetic CSV of N reports (default 200,000; a fifth with multi-line quoted text) to a temp dir,
   times `ingest_dump` into a fresh store, then a re-ingest of the same file (idempotent: nothing new).
2. Inserts synthetic extractions whose tumors table holds M rows (default 1,000,000) plus the 18 organ rows per
   extraction, all through Arrow, and times a per-organ count query over `organ_summary`.

Targets (issue 2): >= 20,000 reports/s ingest; per-organ count over organ_summary < 200 ms.

    python benchmarks/bench_ingest.py [--reports 200000] [--tumors 1000000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from extract.ingest import IngestConfig, ingest_dump
from extract.store import Store
from schemas.tables import ORGAN_FINDINGS_SCHEMA, TUMORS_SCHEMA
from schemas.vocab import ORGANS

_FINDINGS = [
    "The liver is normal in size with a {d} cm hypodense lesion in segment {s}.",
    "No focal hepatic lesion.",
    "Pancreas: no mass or ductal dilatation.",
    "Kidneys: a {d} cm simple cyst in the {side} kidney.",
    "Spleen is unremarkable.",
    "Adrenal glands are normal.",
    "Multiple hypodense lesions in the liver, the largest measuring {d} x {d2} cm.",
    "Bladder is decompressed.",
]
_IMPRESSIONS = ["No acute abdominal findings.", "Hepatic lesion, likely cyst.", "Stable renal cyst."]


def _report(rng: random.Random) -> str:
    parts = [
        rng.choice(_FINDINGS).format(d=rng.randint(1, 9), d2=rng.randint(1, 9), s=rng.randint(1, 8),
                                     side=rng.choice(["left", "right"]))
        for _ in range(rng.randint(3, 8))
    ]
    sep = "\n" if rng.random() < 0.2 else " "  # a fifth of the reports span several lines
    return f"FINDINGS: {sep.join(parts)}{sep}IMPRESSION: {rng.choice(_IMPRESSIONS)}"


def write_csv(path: Path, n: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("Accession Number,Report Text,Exam Description\n")
        for i in range(n):
            text = _report(rng).replace('"', '""')
            f.write(f'ACC{i:08d},"{text}",CT ABDOMEN PELVIS\n')
    return path.stat().st_size


def bench_ingest(tmp: Path, n: int) -> None:
    csv_path = tmp / "reports.csv"
    size = write_csv(csv_path, n)
    with Store(tmp / "ingest.duckdb") as store:
        for label in ("ingest", "reingest"):
            t0, c0 = time.perf_counter(), time.process_time()
            result = ingest_dump(store, csv_path, IngestConfig())
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            print(json.dumps({
                "bench": f"ingest_csv_{label}", "reports": n, "csv_mb": round(size / 2**20, 1),
                "seconds": round(dt, 3), "cpu_seconds": round(cpu, 3), "reports_per_s": round(n / dt),
                "target_reports_per_s": 20000, "load_avg_1m": round(os.getloadavg()[0], 2),
                "new": result.stats.new, "unchanged": result.stats.unchanged,
            }), flush=True)


def _synthetic_extractions(n_tumors: int, per_report: int = 5, seed: int = 0):
    """Arrow tables for n_tumors / per_report reports with `per_report` tumors each (organ_findings: 18 rows each)."""
    rng = np.random.default_rng(seed)
    n_rep = n_tumors // per_report
    rids = pa.array([f"R{i:08d}" for i in range(n_rep)])
    keys = pa.array([hashlib.sha256(f"k{i}".encode()).hexdigest() for i in range(n_rep)])
    t0 = datetime(2026, 1, 1)
    reports = pa.table({"report_id": rids, "text": pa.array(["x"] * n_rep)})
    extractions = pa.table({
        "extraction_key": keys, "run_id": pa.array(["bench"] * n_rep), "report_id": rids,
        "report_version": pa.array(np.ones(n_rep, np.int32)), "report_sha256": pa.array(["0" * 64] * n_rep),
        "config_hash": pa.array(["cfg"] * n_rep), "status": pa.array(["ok"] * n_rep),
        "payload": pa.array(['{"tumors": []}'] * n_rep),
        "created_at": pa.array([t0 + timedelta(seconds=i) for i in range(n_rep)], pa.timestamp("us")),
    })
    organ_idx = rng.integers(0, len(ORGANS), n_tumors)
    organs = pa.array(np.array(ORGANS)[organ_idx])
    rep_idx = np.repeat(np.arange(n_rep), per_report)
    tumors = pa.table({
        "extraction_key": pc.take(keys, pa.array(rep_idx)), "report_id": pc.take(rids, pa.array(rep_idx)),
        "tumor_id": pa.array(np.tile(np.arange(1, per_report + 1, dtype=np.int32), n_rep)),
        "organ": organs, "size_status": pa.array(["measured"] * n_tumors),
        "largest_diameter_mm": pa.array(rng.uniform(3, 80, n_tumors)),
    }).cast(pa.schema([TUMORS_SCHEMA.field(c) for c in
                       ("extraction_key", "report_id", "tumor_id", "organ", "size_status", "largest_diameter_mm")]))
    n_org = n_rep * len(ORGANS)
    states = np.array(["lesion", "no_lesion", "not_mentioned", "equivocal"])[rng.integers(0, 4, n_org)]
    findings = pa.table({
        "extraction_key": pc.take(keys, pa.array(np.repeat(np.arange(n_rep), len(ORGANS)))),
        "report_id": pc.take(rids, pa.array(np.repeat(np.arange(n_rep), len(ORGANS)))),
        "organ": pa.array(np.tile(np.array(ORGANS), n_rep)),
        "state": pa.array(states),
        "lesion_count": pa.array(np.where(states == "lesion", rng.integers(1, 5, n_org), 0).astype(np.int32)),
        "largest_diameter_mm": pa.array(rng.uniform(3, 80, n_org)),
    })
    findings = findings.cast(pa.schema([ORGAN_FINDINGS_SCHEMA.field(c) for c in findings.column_names]))
    return reports, extractions, tumors, findings


def bench_query(tmp: Path, n_tumors: int, repeats: int = 5) -> None:
    reports, extractions, tumors, findings = _synthetic_extractions(n_tumors)
    with Store(tmp / "query.duckdb") as store:
        t0 = time.perf_counter()
        store.add_reports(reports, source="bench")
        store.write_extractions(extractions, tumors, findings)
        load_s = time.perf_counter() - t0
        sql = "SELECT organ, count(*) FILTER (WHERE state = 'lesion') AS n FROM organ_summary GROUP BY organ"
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            rows = store.query(sql).num_rows
            times.append(time.perf_counter() - t)
        tumor_sql = "SELECT t.organ, count(*) FROM tumors t JOIN current_extractions USING (extraction_key) GROUP BY 1"
        t = time.perf_counter()
        store.query(tumor_sql)
        tumor_ms = (time.perf_counter() - t) * 1000
    print(json.dumps({
        "bench": "organ_summary_per_organ_count", "tumor_rows": n_tumors, "reports": reports.num_rows,
        "organ_summary_rows": findings.num_rows, "load_s": round(load_s, 2), "organs": rows,
        "median_ms": round(sorted(times)[len(times) // 2] * 1000, 1), "min_ms": round(min(times) * 1000, 1),
        "target_ms": 200, "tumors_per_organ_count_ms": round(tumor_ms, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=200_000)
    parser.add_argument("--tumors", type=int, default=1_000_000)
    args = parser.parse_args()
    print(json.dumps({"bench": "env", "cpus": os.cpu_count(), "python": platform.python_version(),
                      "note": "wall-clock; other jobs may share the CPUs"}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        bench_ingest(Path(tmp), args.reports)
        bench_query(Path(tmp), args.tumors)


if __name__ == "__main__":
    main()
