"""Report-guided review (issue 22): how fast `rsuper audit` is, and how well its score finds injected report errors.

Parts, one JSON line per figure:

* ``speed``: `rsuper audit` end to end (a subprocess of ``python -m rsuper audit --records truth --pages 0
  --workers W``: reading every prediction folder, the comparison, the store's `audit` table and ``audit.csv``)
  over ``--n`` CTs of 128³ (target: 1,000 CTs in <= 120 s), then :func:`train.review.pages.write_pages` for
  ``--pages`` CTs (target: 100 in <= 60 s), timed in this process after an untimed audit of those CTs. The CTs are
  ``--distinct`` phantoms (:mod:`train.data.phantoms`, default config) with a perfect model's predictions
  (:func:`train.review.synthetic.write_truth_prediction`), reused round-robin: each of the N prediction folders
  ``pred/ct_NNNN`` holds symlinks to one phantom's prediction files, and each case folder ``cases/ct_NNNN`` is a
  symlink to its phantom's case, so the audit reads and decompresses every file of every CT as it would for N
  distinct CTs (only the OS page cache is shared, as it would be right after `rsuper predict`).
* ``injected``: precision@k of the audit score. 10 % of the CTs (``--error-rate``) get one report error from
  :func:`train.review.synthetic.inject_error`, kinds cycled through ``ERROR_KINDS`` (seeded); k is the number of
  injected errors. Prints precision@k, the recall within the top k per kind, and per kind how many erroneous
  CTs score above 0 at all (the kinds the audit misses). The predictions are a perfect model's (truth
  predictions of ``--n-injected`` phantoms) unless ``--predictions DIR`` names an `rsuper predict` output of a
  trained model; then ``--cases ROOT`` is the phantom root those CTs came from (its ``ground_truth.jsonl`` and
  ``case_reports.csv`` give the true records the errors go into).

Built inputs are cached under ``--cache`` (default runs/bench_audit/, ignored by git) and reused by later runs.
Wall-clock time on a shared machine follows the load, so each line also gives CPU seconds and the 1-minute load
average.

Usage: python benchmarks/bench_audit.py speed [--n 1000] [--pages 100] [--distinct 20] [--workers 1]
       python benchmarks/bench_audit.py injected [--n-injected 200] [--error-rate 0.1] [--seed 0] [--db DB]
       python benchmarks/bench_audit.py injected --predictions runs/x/pred --cases data/phantoms/test
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["liver", "pancreas", "kidney", "spleen", "liver_lesion", "pancreas_lesion", "kidney_lesion"]


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# -- inputs -------------------------------------------------------------------------------------------------


def truth_set(root: Path, n: int, shape: tuple[int, int, int], seed: int, small: float | None = None
              ) -> tuple[Path, Path]:
    """(phantom root, truth predictions folder) of ``n`` phantoms, written once under ``root``."""
    from train.data.labels import load_label_names
    from train.data.phantoms import PhantomConfig, write_phantom_set
    from train.review.synthetic import write_truth_prediction

    cases, pred = root / "phantoms", root / "truth"
    done = root / "done"
    if not done.is_file():
        extra = {} if small is None else {"small_lesion_probability": small}
        write_phantom_set(cases, PhantomConfig(n=n, seed=seed, shape=shape, **extra), progress=True)
        organ_names = load_label_names(cases / "labels.json")
        lesion_names = load_label_names(cases / "lesion_labels.json")
        for case_dir in sorted((cases / "cases").iterdir()):
            write_truth_prediction(case_dir, pred / case_dir.name, CLASSES, organ_names, lesion_names)
        done.write_text("ok\n")
    return cases, pred


def replicate(cases: Path, pred: Path, out: Path, n: int) -> tuple[Path, Path]:
    """``n`` CTs made of the phantoms under ``cases`` / ``pred`` round-robin (module docstring): (case root,
    predictions folder) under ``out``."""
    root, folder = out / "cts", out / "pred"
    if (out / "done").is_file():
        return root, folder
    base = sorted(p.name for p in (cases / "cases").iterdir())
    with (cases / "case_reports.csv").open() as fh:
        report_of = {r["ct_id"]: r["report_id"] for r in csv.DictReader(fh)}
    (root / "cases").mkdir(parents=True, exist_ok=True)
    for name in ("labels.json", "lesion_labels.json", "ground_truth.jsonl"):
        (root / name).unlink(missing_ok=True)
        (root / name).symlink_to((cases / name).resolve())
    rows = []
    for i in range(n):
        ct, src = f"ct_{i:04d}", base[i % len(base)]
        (root / "cases" / ct).unlink(missing_ok=True)
        (root / "cases" / ct).symlink_to((cases / "cases" / src).resolve())
        (folder / ct).mkdir(parents=True, exist_ok=True)
        for f in (pred / src).iterdir():
            (folder / ct / f.name).unlink(missing_ok=True)
            (folder / ct / f.name).symlink_to(f.resolve())
        rows.append((ct, report_of[src]))
    with (root / "case_reports.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("ct_id", "report_id"), *rows])
    (out / "done").write_text("ok\n")
    return root, folder


# -- speed --------------------------------------------------------------------------------------------------


def bench_speed(args) -> None:
    from train.data.labels import load_label_names
    from train.data.records import records_from_ground_truth
    from train.evaluate import read_mapping
    from train.review.config import AuditConfig
    from train.review.files import audit_predictions, page_arrays
    from train.review.pages import write_pages

    shape = tuple(args.shape)
    base = args.cache / f"speed_{'x'.join(map(str, shape))}_{args.distinct}_seed{args.seed}"
    cases, truth = truth_set(base, args.distinct, shape, args.seed)

    cts, pred = replicate(cases, truth, base / f"n{args.n}", args.n)
    out = base / f"n{args.n}" / "out"
    db = out / "bench.duckdb"
    out.mkdir(exist_ok=True)
    db.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "rsuper", "audit", str(pred), "--cases", str(cts), "--records", "truth",
           "--db", str(db), "--out", str(out), "--pages", "0",
           *(["--workers", str(args.workers)] if args.workers != 1 else [])]  # code before --workers runs too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(":")}
    load0, c0, t0 = _load(), _children_cpu_s(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu_s() - c0
    if proc.returncode != 0:
        sys.exit(f"rsuper audit failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    summary = proc.stdout.strip().splitlines()[-1]
    with open(out / "audit.csv") as fh:
        n_rows = sum(1 for _ in csv.DictReader(fh))
    emit(bench="audit_speed", cts=args.n, workers=args.workers, shape=list(shape), distinct_phantoms=args.distinct,
         seconds=round(wall, 2),
         cpu_seconds=round(cpu, 2), seconds_per_ct=round(wall / args.n, 4), target_seconds=120 * args.n / 1000,
         csv_rows=n_rows, summary=summary, load_before=load0, load_after=_load(),
         command=" ".join(["python -m rsuper audit PRED --cases CTS --records truth --db DB --out OUT --pages 0",
                           *(cmd[cmd.index("--workers"):] if "--workers" in cmd else [])]))

    # Pages: the audit results of the first --pages CTs (not timed), then the pages alone.
    organ_names = load_label_names(cts / "labels.json")
    records = records_from_ground_truth(cts / "ground_truth.jsonl")
    mapping = read_mapping(cts / "case_reports.csv")
    sub = base / f"n{args.n}" / f"pred_first{args.pages}"
    sub.mkdir(exist_ok=True)
    for folder in sorted(pred.iterdir())[: args.pages]:
        if not (sub / folder.name).exists():
            (sub / folder.name).symlink_to(folder.resolve())
    results, _ = audit_predictions(sub, lambda ct: records.get(mapping.get(ct)), AuditConfig(), cases_root=cts,
                                   organ_names=organ_names)
    pages_dir = out / "pages"
    load0, c0, t0 = _load(), time.process_time(), time.perf_counter()
    write_pages(results, pages_dir, arrays_of=lambda r: page_arrays(r, organ_names), max_pages=args.pages)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    pngs = sum(1 for _ in pages_dir.glob("*/view_*.png"))
    emit(bench="pages_speed", cts=len(results), shape=list(shape), seconds=round(wall, 2), cpu_seconds=round(cpu, 2),
         seconds_per_ct=round(wall / max(1, len(results)), 4), target_seconds=60 * args.pages / 100, pngs=pngs,
         load_before=load0, load_after=_load(), command="train.review.pages.write_pages(results, OUT, "
         "arrays_of=page_arrays, max_pages=N)")


# -- injected errors ----------------------------------------------------------------------------------------


def inject(records: dict, mapping: dict[str, str], rate: float, seed: int, organs) -> tuple[dict, dict[str, str]]:
    """(report_id -> records with the errors in, ct_id -> error kind). round(rate x CTs) CTs, taken in a seeded
    shuffled order, kinds cycled; a CT whose report cannot carry the kind due is passed over for that kind."""
    from train.review.synthetic import ERROR_KINDS, inject_error

    rng = np.random.default_rng(seed)
    cts = sorted(ct for ct in mapping if mapping[ct] in records)
    order = [cts[i] for i in rng.permutation(len(cts))]
    want = round(rate * len(cts))
    shared = {rid for rid in mapping.values() if list(mapping.values()).count(rid) > 1}
    bad, kinds = dict(records), {}
    for n in range(want):
        kind = ERROR_KINDS[n % len(ERROR_KINDS)]
        for ct in order:
            if ct in kinds or mapping[ct] in shared:  # an error in a shared report would reach other CTs
                continue
            changed = inject_error(records[mapping[ct]], kind, rng, organs=organs)
            if changed is not None:
                bad[mapping[ct]], kinds[ct] = changed, kind
                break
    return bad, kinds


def bench_injected(args) -> None:
    from train.data.labels import load_label_names
    from train.data.records import records_from_ground_truth
    from train.evaluate import read_mapping
    from train.review.config import AuditConfig
    from train.review.files import audit_predictions, prediction_folders, read_prediction
    from train.review.synthetic import ERROR_KINDS

    if args.predictions is not None:
        if args.cases is None:
            sys.exit("--predictions needs --cases ROOT (the phantom root with ground_truth.jsonl)")
        cases, pred, source = args.cases, args.predictions, "predictions"
    else:
        small = "" if args.small_lesion_probability is None else f"_small{args.small_lesion_probability}"
        base = args.cache / f"injected_{'x'.join(map(str, args.shape))}_{args.n_injected}_seed{args.seed}{small}"
        cases, pred = truth_set(base, args.n_injected, tuple(args.shape), args.seed, args.small_lesion_probability)
        source = "truth"
    folders = prediction_folders(pred)
    if not folders:
        sys.exit(f"{pred}: no */summary.json (an `rsuper predict` output folder)")
    organs = tuple(read_prediction(folders[0]).organs)
    records = records_from_ground_truth(cases / "ground_truth.jsonl")
    mapping = {ct: rid for ct, rid in read_mapping(cases / "case_reports.csv").items()
               if ct in {f.name for f in folders}}
    bad, kinds = inject(records, mapping, args.error_rate, args.seed, organs)
    t0 = time.perf_counter()
    results, skipped = audit_predictions(pred, lambda ct: bad.get(mapping.get(ct, "")), AuditConfig(),
                                         cases_root=cases, organ_names=load_label_names(cases / "labels.json"))
    wall = time.perf_counter() - t0
    if args.db is not None:  # the rows with the injected errors, for SQL on the `audit` table
        from extract.store import Store
        from schemas.tables import audit_table

        with Store(args.db) as store:
            store.write_audit(audit_table([r.audit for r in results]))
    k = len(kinds)
    top = {r.audit.ct_id for r in results[:k]}
    flagged = {r.audit.ct_id for r in results if r.audit.score > 0}
    per_kind = {}
    for kind in ERROR_KINDS:
        cts = [ct for ct, kd in kinds.items() if kd == kind]
        per_kind[kind] = {"injected": len(cts), "in_top_k": sum(ct in top for ct in cts),
                          "recall_at_k": round(sum(ct in top for ct in cts) / len(cts), 3) if cts else None,
                          "scored_above_0": sum(ct in flagged for ct in cts)}
    clean_flagged = sorted(flagged - set(kinds))
    clean_reasons: dict[str, int] = {}
    for r in results:
        if r.audit.ct_id in clean_flagged:
            for reason in r.audit.reasons:
                clean_reasons[reason.value] = clean_reasons.get(reason.value, 0) + 1
    small = args.small_lesion_probability if args.predictions is None else None
    emit(bench="audit_injected", source=source, predictions=str(pred), small_lesion_probability=small,
         cts=len(results), skipped=len(skipped), error_rate=args.error_rate, seed=args.seed, k=k,
         precision_at_k=round(len(top & set(kinds)) / k, 3) if k else None, per_kind=per_kind,
         missed_kinds=[kd for kd, v in per_kind.items() if v["injected"] and v["in_top_k"] < v["injected"]],
         clean_cts_scored_above_0=len(clean_flagged), clean_flagged_reasons=clean_reasons,
         clean_flagged_examples=clean_flagged[:5],
         audit_seconds=round(wall, 2), load_after=_load())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("speed", "injected"))
    parser.add_argument("--cache", type=Path, default=REPO / "runs" / "bench_audit", help="built inputs (reused)")
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 128, 128), help="phantom voxels per axis")
    parser.add_argument("--seed", type=int, default=0, help="phantom set and error injection seed")
    parser.add_argument("--n", type=int, default=1000, help="speed: CTs audited")
    parser.add_argument("--pages", type=int, default=100, help="speed: CTs with case pages")
    parser.add_argument("--distinct", type=int, default=20, help="speed: distinct phantoms behind the CTs")
    parser.add_argument("--workers", type=int, default=1, help="speed: `rsuper audit --workers`")
    parser.add_argument("--n-injected", type=int, default=200, help="injected: phantoms (truth predictions)")
    parser.add_argument("--error-rate", type=float, default=0.1, help="injected: share of CTs with one error")
    parser.add_argument("--small-lesion-probability", type=float, help="injected: phantoms' share of tumours "
                        "too small to characterize (default: PhantomConfig's)")
    parser.add_argument("--predictions", type=Path, help="injected: an `rsuper predict` output folder to audit "
                        "instead of truth predictions")
    parser.add_argument("--cases", type=Path, help="injected: the phantom root of --predictions")
    parser.add_argument("--db", type=Path, help="injected: also write the audit rows to this store's `audit` table")
    args = parser.parse_args()
    bench_speed(args) if args.part == "speed" else bench_injected(args)


if __name__ == "__main__":
    main()
