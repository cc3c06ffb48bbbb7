"""Does report supervision help? Phantom benchmark of masks-only against masks + reports (issue 8).

The protocol (arms, settings, phantom sets, mask-CT draws, scoring, results) is :mod:`train.science`; this script
parses the command line and schedules the (arm, seed) runs: it generates the training pool and the stratified test
set, extracts the pool's reports once (in the background, while the other arms train), trains / predicts /
evaluates each (arm, seed), writes ``results.json`` after every (arm, seed) and finally ``results.md`` with a plot.
A rerun reuses every finished piece under ``work_dir`` (phantoms, extraction stores, checkpoints, per-run
``result.json``). See docs/science.md.

Usage::

    python benchmarks/bench_science.py                     # CPU scale, 3 seeds (5-6 hours on 2 free cores)
    python benchmarks/bench_science.py --scale smoke       # minutes: tiny pool, 1 seed, a few steps
    python benchmarks/bench_science.py --scale gpu         # full scale on a GPU
    python benchmarks/bench_science.py --seeds 0 --arms masks_only masks_reports_truth
    python benchmarks/bench_science.py --report-only       # rewrite results.json / .md / plot from the runs
    python benchmarks/bench_science.py --rescore           # predict and score the finished runs again
    python benchmarks/bench_science.py --scale al_cpu --protocol active  # active-learning round per seed (~1 h)
    python benchmarks/bench_science.py --protocol no_mask --set 'no_mask_organs=[pancreas]'  # reports alone

Prints one JSON line per finished (arm, seed) and a final summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from train.science.draws import ensure_pool, ensure_test
from train.science.extraction import (extraction_summary_path, finish_extraction, load_extracted_records,
                                      start_extraction, stored_extraction_meta)
from train.science.protocol import ARMS, METRIC_KEYS, PRESETS, ScienceSettings, settings_fingerprint, training_slots
from train.science.report import summarise, write_report, write_results
from train.science.runs import collect_entries, forget_scores, run_one

REPO = Path(__file__).resolve().parent.parent


def resolve_settings(argv: list[str] | None = None) -> tuple[ScienceSettings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--arms", nargs="+", choices=ARMS)
    p.add_argument("--work-dir", type=Path)
    p.add_argument("--results", type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="benchmark setting KEY=VALUE (YAML value), e.g. --set pool_cases=60")
    p.add_argument("--train-set", action="append", default=[], help="training override, e.g. optim.total_steps=200")
    p.add_argument("--report-only", action="store_true",
                   help="only rewrite results.json, results.md and the plot from the finished runs")
    p.add_argument("--rescore", action="store_true",
                   help="predict and score the selected finished runs again (after a change to prediction or "
                   "scoring code, which the run fingerprint does not cover); checkpoints are kept")
    p.add_argument("--protocol", choices=("arms", "active", "no_mask"), default="arms",
                   help="arms: the arm comparison; active: one active-learning round per seed (top-k disagreement "
                   "CTs against k random CTs given their masks); no_mask: each of no_mask_organs in turn with no "
                   "voxel mask in the pool (docs/science.md)")
    p.add_argument("--progress", action="store_true", help="show the training progress bars")
    args = p.parse_args(argv)
    import yaml

    raw: dict[str, Any] = {"scale": args.scale, **PRESETS[args.scale]}
    for text in args.overrides:
        key, _, value = text.partition("=")
        raw[key.strip()] = yaml.safe_load(value)
    if args.protocol == "no_mask":
        from train.science.no_mask import NO_MASK_ARMS

        raw["arms"] = list(NO_MASK_ARMS)  # the preset's arms are the mixed protocol's
    if args.protocol == "active" and args.scale != "al_cpu":  # al_cpu's results are the active round's already
        raw["results"] = Path(raw["results"]).with_name(f"results_active_{args.scale}.json")  # not the arms' table
    for key in ("seeds", "arms", "work_dir", "results"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    raw["train_overrides"] = list(raw.get("train_overrides", [])) + args.train_set
    return ScienceSettings.model_validate(raw), args


def _short(entry: dict) -> dict:
    return {"bench": "science", **{k: entry[k] for k in ("arm", "seed", *METRIC_KEYS, "train_seconds",
                                                         "eval_seconds")}}


def main(argv: list[str] | None = None) -> list[dict]:
    settings, args = resolve_settings(argv)
    if not args.progress:
        os.environ.setdefault("TQDM_DISABLE", "1")
    results = settings.results if settings.results.is_absolute() else REPO / settings.results
    work = settings.work_dir if settings.work_dir.is_absolute() else REPO / settings.work_dir
    settings = settings.model_copy(update={"work_dir": work, "results": results})
    fingerprint = settings_fingerprint(settings)
    meta: dict[str, Any] = {"scale": settings.scale, "train_config": str(settings.train_config),
                            "pool_cases": settings.pool_cases, "mask_cases": settings.mask_cases,
                            "test_cases": settings.test_cases, "phantom_shape": list(settings.phantom_shape),
                            "threshold_mm3": settings.threshold_mm3, "fingerprint": fingerprint}
    if args.protocol == "no_mask":  # before --report-only: that protocol writes its own report
        return main_no_mask(settings, fingerprint, meta, report_only=args.report_only)
    if args.report_only:
        meta.update(stored_extraction_meta(settings))
        entries = collect_entries(settings, fingerprint)
        write_results(results, entries)
        write_report(results, entries, meta)
        return entries

    if args.protocol == "active":
        return main_active(settings, fingerprint, meta)

    import logging

    from extract.evaluation import extraction_agreement
    from train.data.records import records_from_ground_truth

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    t_start = time.perf_counter()
    pool = ensure_pool(settings)
    ensure_test(settings)
    meta["phantoms_s"] = round(time.perf_counter() - t_start, 1)
    if args.rescore:
        print(json.dumps({"bench": "science", "step": "rescore", "runs": forget_scores(settings, fingerprint)}),
              flush=True)
    done = {(e["arm"], e["seed"]) for e in collect_entries(settings, fingerprint)}
    todo = [(seed, arm) for seed in settings.seeds for arm in ARMS if arm in settings.arms
            and (arm, seed) not in done]
    procs, t_extract = [], time.perf_counter()
    if any(arm == "masks_reports_extracted" for _, arm in todo):
        procs = start_extraction(settings, pool)

    def extraction_done() -> None:
        meta["extraction_wall_s"] = round(finish_extraction(procs, t_extract), 1)
        truth = records_from_ground_truth(pool / "ground_truth.jsonl")
        extracted = load_extracted_records(settings, list(truth))
        agreement = extraction_agreement(extracted, truth)
        meta["extraction_vs_truth"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in agreement.items()}
        extraction_summary_path(settings).write_text(json.dumps({"extraction_vs_truth": meta["extraction_vs_truth"]}))
        print(json.dumps({"bench": "science", "step": "extraction", **meta["extraction_vs_truth"],
                          "wall_s": meta["extraction_wall_s"]}), flush=True)

    def finished(entry: dict) -> None:
        write_results(results, collect_entries(settings, fingerprint))
        print(json.dumps(_short(entry)), flush=True)

    # Seed by seed; the extracted arm waits for the LLM while the other arms train.
    pending = list(todo)

    def next_task(extraction_ready: bool) -> tuple[int, str] | None:
        for task in pending:
            if task[1] != "masks_reports_extracted" or extraction_ready:
                pending.remove(task)
                return task
        return None

    try:
        if settings.jobs == 1:
            while pending:
                task = next_task(extraction_ready=not procs or "extraction_wall_s" in meta)
                if task is None:
                    extraction_done()
                    continue
                finished(run_one(settings, task[1], task[0], fingerprint))
            if procs and "extraction_wall_s" not in meta:
                extraction_done()
        else:
            import concurrent.futures as cf
            import multiprocessing

            with cf.ProcessPoolExecutor(settings.jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
                running: set = set()
                while pending or running:
                    ready = not procs or "extraction_wall_s" in meta
                    if procs and not ready and all(p.poll() is not None for p in procs):
                        extraction_done()
                        continue
                    while len(running) < training_slots(settings, extraction_running=not ready):
                        task = next_task(ready)
                        if task is None:
                            break
                        running.add(ex.submit(run_one, settings, task[1], task[0], fingerprint))
                    if not running:  # only extracted-arm runs left: wait for the LLM
                        extraction_done()
                        continue
                    done_now, running = cf.wait(running, timeout=5, return_when=cf.FIRST_COMPLETED)
                    for f in done_now:
                        finished(f.result())
            if procs and "extraction_wall_s" not in meta:
                extraction_done()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
    meta.update(stored_extraction_meta(settings))
    meta["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    entries = collect_entries(settings, fingerprint)
    write_results(results, entries)
    write_report(results, entries, meta)
    summary = summarise(entries)
    print(json.dumps({"bench": "science", "step": "summary", "scale": settings.scale,
                      "results": str(results), "total_wall_s": meta["total_wall_s"],
                      "mean": {arm: {k: round(v[0], 4) for k, v in s.items()} for arm, s in summary.items()}}),
          flush=True)
    return entries


def main_active(settings: ScienceSettings, fingerprint: str, meta: dict[str, Any]) -> list[dict]:
    """One active-learning round per seed (train.science.active); results_*.json / .md rewritten after each."""
    from train.science.active import summarise_active, write_active
    from train.science.active import run_active_seed

    t_start = time.perf_counter()
    ensure_pool(settings)
    ensure_test(settings)
    meta.update({"al_k": settings.al_k, "al_steps": settings.al_steps,
                 "al_error_fraction": settings.al_error_fraction, "train_overrides": settings.train_overrides})
    results = []
    for seed in settings.seeds:
        r = run_active_seed(settings, seed, fingerprint)
        results.append(r)
        write_active(settings.results, results, meta)
        print(json.dumps({"bench": "science", "protocol": "active", "seed": seed, "dice_difference":
                          round(r["difference"]["dice"], 4), "precision_at_k": r["precision"]["precision_at_k"]}),
              flush=True)
    meta["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    write_active(settings.results, results, meta)
    s = summarise_active(results)
    print(json.dumps({"bench": "science", "protocol": "active", "step": "summary", "dice_difference":
                      s["difference"]["dice"], "precision_at_k_pooled": s["precision_at_k_pooled"]}), flush=True)
    return results


def main_no_mask(settings: ScienceSettings, fingerprint: str, meta: dict[str, Any],
                 report_only: bool = False) -> dict[str, list[dict]]:
    """Each of ``no_mask_organs`` in turn without voxel masks (train.science.no_mask); the all-masks control is
    trained once for every organ. results_*_no_mask.json / .md are rewritten after each finished run (only
    rewritten from the finished runs with ``report_only``)."""
    from train.science.no_mask import NO_MASK_ARMS, results_path, write_no_mask
    from train.science.protocol import run_dir_of

    t_start = time.perf_counter()
    ensure_pool(settings)
    ensure_test(settings)
    unknown = [a for a in settings.arms if a not in NO_MASK_ARMS]
    if unknown:
        raise SystemExit(f"--protocol no_mask runs the arms {', '.join(NO_MASK_ARMS)}; not {', '.join(unknown)}")
    arms = [a for a in NO_MASK_ARMS if a in settings.arms]
    per_organ = {organ: settings.model_copy(update={"no_mask_organ": organ}) for organ in settings.no_mask_organs}
    mixed = settings.model_copy(update={"no_mask_organ": None})
    tasks, seen = [], set()
    for organ, s in per_organ.items():
        for seed in settings.seeds:
            for arm in arms:
                run_dir = run_dir_of(s, arm, seed, fingerprint)[0]
                if not report_only and run_dir not in seen and not (run_dir / "result.json").is_file():
                    seen.add(run_dir)
                    tasks.append((s, arm, seed))
    results = results_path(settings.results)
    meta.update({"no_mask_organs": settings.no_mask_organs, "train_overrides": settings.train_overrides,
                 "no_mask_report_overrides": settings.no_mask_report_overrides})

    def finished_entry(settings_: ScienceSettings, arm: str, seed: int) -> dict | None:
        path = run_dir_of(settings_, arm, seed, fingerprint)[0] / "result.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write() -> dict[str, list[dict]]:
        by_organ = {organ: [e for seed in settings.seeds for arm in arms
                            if (e := finished_entry(s, arm, seed)) is not None] for organ, s in per_organ.items()}
        mixed_entries = [e for seed in settings.seeds if (e := finished_entry(mixed, "masks_reports_truth", seed))]
        write_no_mask(results, by_organ, mixed_entries, {**meta, "total_wall_s": round(time.perf_counter() -
                                                                                        t_start, 1)})
        return by_organ

    def report(entry: dict) -> None:
        write()
        organ = entry["no_mask_organ"]
        print(json.dumps({"bench": "science", "protocol": "no_mask", "arm": entry["arm"], "seed": entry["seed"],
                          "no_mask_organ": organ, "organs": {o: {k: round(v, 4) for k, v in m.items()}
                                                             for o, m in entry["organs"].items()},
                          "train_seconds": entry["train_seconds"]}), flush=True)

    if settings.jobs == 1:
        for s, arm, seed in tasks:
            report(run_one(s, arm, seed, fingerprint))
    else:
        import concurrent.futures as cf
        import multiprocessing

        with cf.ProcessPoolExecutor(settings.jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
            for future in cf.as_completed([ex.submit(run_one, s, arm, seed, fingerprint) for s, arm, seed in tasks]):
                report(future.result())
    by_organ = write()
    print(json.dumps({"bench": "science", "protocol": "no_mask", "step": "summary", "results": str(results),
                      "runs": sum(len(v) for v in by_organ.values())}), flush=True)
    return by_organ


if __name__ == "__main__":
    main()
