"""Extraction accuracy on the development gold sets: one JSON line per gold set (and backend).

Runs the extraction engine on the gold reports (working stores under build/eval/, so a rerun resumes), then
scores them with `extract.evaluation`. Gold sets: data/gold/dev_gold.jsonl (optionally a subset) and, when
../shared/gold/dev_cases.jsonl exists, those 40 cases converted to the organ-summary shape at run time.

    python benchmarks/bench_accuracy.py --subset data/gold/ci_subset.txt      # CI subset, embedded model
    python benchmarks/bench_accuracy.py --backend openai --llm-url http://host:8000/v1 --model NAME

Wall times depend on the machine and its load; say which machine gave them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extract import evaluation as ev  # noqa: E402

DEV_GOLD = ROOT / "data" / "gold" / "dev_gold.jsonl"
SHARED_CASES = ROOT.parent / "shared" / "gold" / "dev_cases.jsonl"
WORK = ROOT / "build" / "eval"


def _metrics(result: dict) -> dict:
    o, c = result["overall"], result["core"]
    return {
        "core_presence_f1": c["presence"]["f1"], "core_presence_precision": c["presence"]["precision"],
        "core_presence_recall": c["presence"]["recall"], "overall_presence_f1": o["presence"]["f1"],
        "state_rate": o["state"]["rate"], "count_rate": o["count"]["rate"], "diameter_rate": o["diameter"]["rate"],
        "diameter_pairs": o["diameter"]["total"], "diameter_e2e_rate": o["diameter_e2e"]["rate"],
        "location_rate": o["location"]["rate"], "attenuation_rate": o["attenuation"]["rate"],
        "equivocal_recall": o["equivocal"]["recall"], "failure_rate": result["failure_rate"],
        "targets_met": all(t["met"] is not False for t in ev.check_targets(result)),
    }


def run_one(name: str, reports: list, args: argparse.Namespace) -> dict:
    from extract.backends.base import SamplingConfig
    from extract.run_cli import BackendName, build_backend

    backend = build_backend(BackendName(args.backend), urls=args.llm_url, model=args.model, model_path=None,
                            model_revision="", quantization="", concurrency=args.concurrency, timeout_s=300.0,
                            retries=2, threads=args.threads)
    db = WORK / f"bench-{name}-{args.backend}.duckdb"
    start = time.perf_counter()
    summary = ev.extract_gold(reports, db, backend, sampling=SamplingConfig(max_tokens=args.max_tokens))
    wall_s = time.perf_counter() - start
    result = ev.evaluate(reports, ev.predictions_from_store(db, [r.id for r in reports]))
    out = WORK / f"bench-{name}-{args.backend}.json"
    out.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    extracted = summary.get("ok", 0) + summary.get("repaired", 0) + summary.get("failed", 0)
    return {"bench": "accuracy", "gold": name, "reports": len(reports), "backend": args.backend,
            "model": args.model, "extracted_now": extracted, "wall_s": round(wall_s, 1),
            "s_per_extracted_report": round(wall_s / extracted, 2) if extracted else None,
            "machine": platform.node(), **_metrics(result), "result_file": str(out.relative_to(ROOT))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gold", type=Path, default=DEV_GOLD)
    parser.add_argument("--subset", type=Path, help="id list, e.g. data/gold/ci_subset.txt")
    parser.add_argument("--limit", type=int, help="first N gold reports only")
    parser.add_argument("--no-cases", action="store_true", help="skip the converted ../shared/gold cases")
    parser.add_argument("--backend", default="local", choices=["local", "openai", "vllm"])
    parser.add_argument("--model")
    parser.add_argument("--llm-url", action="append", default=[])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=1024)
    args = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    ids = ev.load_id_list(args.subset) if args.subset else None
    reports = ev.load_gold(args.gold, ids)[: args.limit]
    name = args.gold.stem + (f"-{args.subset.stem}" if args.subset else "") + (f"-first{args.limit}" if args.limit else "")
    print(json.dumps(run_one(name, reports, args)), flush=True)
    if not args.no_cases and args.subset is None and SHARED_CASES.exists():
        converted = WORK / "dev_cases_gold.jsonl"  # holds report text: generated, never committed
        ev.convert_cases(SHARED_CASES, converted)
        cases = ev.load_gold(converted)[: args.limit]
        print(json.dumps(run_one("dev_cases" + (f"-first{args.limit}" if args.limit else ""), cases, args)),
              flush=True)


if __name__ == "__main__":
    main()
