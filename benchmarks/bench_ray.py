"""The Ray extraction path at scale, with instant fake LLM workers; prints one JSON line.

`--reports N` distinct reports go through `rsuper extract --engine ray`'s code (`extract.ray_engine`) on a local
Ray cluster, with a backend that answers every report at once (one liver lesion), so what is measured is the
pipeline: Parquet inputs, Ray Data, validation and conversion in the workers, shard writes, and the loader.
Faults: one worker is killed (SIGKILL) once `--kill-worker-at` of the shards are written, the driver (with the
local cluster it started) once `--kill-driver-at` are; a second driver then finishes the run. Checked at the end:
every report stored exactly once, one tumour per report, one organ row per organ key.

Reported: wall time of each phase, reports/s, the loader's time for all rows (merges while running and at the end),
and each worker's resident and private memory over its blocks (first, after 10 blocks, last, max; private leaves out
the object store's shared pages, which resident counts as the worker reads its blocks).

Usage: python benchmarks/bench_ray.py [--reports 1000000] [--workers 2] [--block-reports 2048]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from extract.backends.base import BackendInfo, Completion  # noqa: E402

SENTENCE = "Liver: 2.2 cm hypodense lesion in segment 8, likely a hemangioma."
ANSWER = json.dumps({"lesions": [{"organ": "liver", "sentences": [1], "count": 1, "count_exact": True}],
                     "normal": [], "resected": []})


class InstantBackend:
    """Answers every report at once with one liver lesion (the LLM taken out of the measurement)."""

    max_concurrency = 256

    async def start(self) -> BackendInfo:
        return BackendInfo(backend="instant", backend_version="0", model_id="instant-fake")

    async def complete(self, messages, schema, sampling) -> Completion:
        return Completion(text=ANSWER, finish_reason="stop", prompt_tokens=0, output_tokens=20)

    async def aclose(self) -> None:
        pass


def drive(db: str, workers: int, block_reports: int, load_every_s: float) -> dict:
    """One driver: run the Ray path over the store `db` until nothing is pending."""
    import extract.ray_engine as ray_engine
    from extract.backends.base import SamplingConfig
    from extract.engine import EngineConfig
    from extract.prompting import load_prompt
    from extract.store import Store

    load_s = [0.0]
    timed = ray_engine.load_shards

    def load_and_time(*args, **kwargs):
        t = time.perf_counter()
        try:
            return timed(*args, **kwargs)
        finally:
            load_s[0] += time.perf_counter() - t

    ray_engine.load_shards = load_and_time
    t0 = time.perf_counter()
    with Store(db) as store:
        stats = ray_engine.run_ray_extraction(
            store, functools.partial(InstantBackend), load_prompt(), SamplingConfig(), EngineConfig(progress=False),
            ray_engine.RayConfig(workers=workers, cpus_per_worker=0.5, block_reports=block_reports,
                                 load_every_s=load_every_s))
    return {"wall_s": round(time.perf_counter() - t0, 1), "load_s": round(load_s[0], 1), **stats.summary()}


def _memory_summary(worker: str, blocks: list[tuple[int, float, float]]) -> dict:
    """A worker's resident and private memory (MiB) over its blocks: first, after 10 blocks (warm), last, max."""
    warm = blocks[min(10, len(blocks) - 1)]
    return {"worker": worker, "blocks": len(blocks),
            "rss_mb": {"first": blocks[0][1], "block_10": warm[1], "last": blocks[-1][1],
                       "max": max(b[1] for b in blocks)},
            "private_mb": {"first": blocks[0][2], "block_10": warm[2], "last": blocks[-1][2],
                           "max": max(b[2] for b in blocks)}}


def _manifests(root: Path) -> list[dict]:
    return [json.loads(m.read_text()) for m in root.glob("*/*/manifest.json")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reports", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--block-reports", type=int, default=2048)
    ap.add_argument("--load-every-s", type=float, default=60.0)
    ap.add_argument("--kill-worker-at", type=float, default=0.1, help="share of shards written (0: no kill)")
    ap.add_argument("--kill-driver-at", type=float, default=0.4, help="share of shards written (0: no kill)")
    ap.add_argument("--drive", help=argparse.SUPPRESS)  # internal: run one driver on this store
    args = ap.parse_args()
    if args.drive:
        print(json.dumps(drive(args.drive, args.workers, args.block_reports, args.load_every_s)), flush=True)
        return

    import pyarrow as pa

    from extract.store import Store
    from schemas.vocab import ORGANS

    with tempfile.TemporaryDirectory(dir=REPO / "build" if (REPO / "build").is_dir() else None) as tmp:
        db = Path(tmp) / "sim.duckdb"
        root = Path(tmp) / "sim.duckdb.shards"
        t0 = time.perf_counter()
        with Store(db) as store:
            for start in range(0, args.reports, 200_000):
                ids = range(start, min(start + 200_000, args.reports))
                store.add_reports(pa.table({"report_id": [f"r{i:07d}" for i in ids],
                                            "text": [f"{SENTENCE} Exam {i}." for i in ids]}), "sim")
        ingest_s = time.perf_counter() - t0
        n_shards = -(-args.reports // args.block_reports)
        cmd = [sys.executable, __file__, "--drive", str(db), "--workers", str(args.workers),
               "--block-reports", str(args.block_reports), "--load-every-s", str(args.load_every_s)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "benchmarks"), str(REPO)])}
        phases = []
        killed_worker = None
        if args.kill_driver_at > 0:
            t1 = time.perf_counter()
            driver = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, text=True)
            while driver.poll() is None:
                written = _manifests(root)
                if killed_worker is None and args.kill_worker_at and len(written) >= args.kill_worker_at * n_shards:
                    killed_worker = int(written[-1]["worker"].rsplit(":", 1)[1])
                    os.kill(killed_worker, signal.SIGKILL)
                if len(written) >= args.kill_driver_at * n_shards:
                    os.killpg(driver.pid, signal.SIGKILL)
                    break
                time.sleep(1)
            driver.wait(60)
            phases.append({"phase": "killed driver", "wall_s": round(time.perf_counter() - t1, 1),
                           "shards_written": len(_manifests(root)), "killed_worker_pid": killed_worker})
        t2 = time.perf_counter()
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        phases.append({"phase": "resumed driver", "wall_s": round(time.perf_counter() - t2, 1),
                       **{k: summary[k] for k in ("pending", "ok", "failed", "left_pending", "killed_runs",
                                                  "load_s", "reports_per_s")}})
        with Store(db, read_only=True) as store:
            check = store.query(
                "SELECT (SELECT count(*) FROM extractions) AS extractions, "
                "(SELECT count(DISTINCT report_id) FROM extractions) AS reports, "
                "(SELECT count(*) FROM tumors) AS tumors, (SELECT count(*) FROM organ_findings) AS organ_rows, "
                "(SELECT count(*) FROM extraction_shards) AS shards_loaded").to_pylist()[0]
            per_run = store.query("SELECT run_id, count(*) AS n FROM extractions GROUP BY run_id").to_pylist()
        memory: dict[str, list[tuple[int, float, float]]] = {}
        for m in _manifests(root):
            memory.setdefault(m["worker"], []).append((m["worker_blocks"], m["worker_rss_mb"],
                                                       m.get("worker_private_mb", 0.0)))
        workers = [_memory_summary(w, sorted(v)) for w, v in sorted(memory.items())]
        print(json.dumps({
            "bench": "ray_extraction_simulation", "reports": args.reports, "workers": args.workers,
            "block_reports": args.block_reports, "ingest_s": round(ingest_s, 1), "phases": phases,
            "total_wall_s": round(time.perf_counter() - t0, 1), **check, "per_run": [r["n"] for r in per_run],
            "lost": args.reports - check["reports"], "duplicated": check["extractions"] - check["reports"],
            "tumors_ok": check["tumors"] == args.reports,
            "organ_rows_ok": check["organ_rows"] == args.reports * len(ORGANS), "worker_memory": workers,
            "load_1min": round(os.getloadavg()[0], 2),
        }), flush=True)


if __name__ == "__main__":
    main()
