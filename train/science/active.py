"""Active learning on phantoms (issue 22): does giving masks to the CTs the audit ranks highest help more than giving
masks to as many random CTs?

Per seed (docs/science.md, "Active learning"):

1. the base network is the seed's ``masks_reports_truth`` run (reused when finished);
2. it predicts the pool's report-only CTs, which are audited against their ground-truth report records;
3. ``al_k`` CTs are chosen by disagreement and ``al_k`` at random (:func:`train.review.active.choose`, rng seeded
   by the seed), never among the mask CTs; a rerun chooses again and reuses a retrain only for the same choice;
4. each choice gets its masks and the network is trained again from the base weights for ``al_steps`` steps
   (same config, same seed, reports on from the first step), and both are scored on the held-out test set;
5. the result is the paired difference disagreement − random of every test metric.

The same base predictions also measure the audit itself: in ``al_error_fraction`` of the CTs the base network
predicted (the pool's report CTs and the test CTs) one report error is injected
(:func:`train.review.synthetic.inject_error`, kinds cycled through ``ERROR_KINDS``), and :func:`audit_precision`
gives the precision at k = number of errors and which kinds reach the top k.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from train.science.protocol import METRIC_KEYS, ScienceSettings, arm_cases, arm_config, pool_cases, seed_mask_ids

BASE_ARM = "masks_reports_truth"
STRATEGIES = ("disagreement", "random")


def active_dir(settings: ScienceSettings, seed: int, base_fp: str) -> Path:
    """Work folder of one seed's round, keyed by the base run's fingerprint and the round's settings."""
    return settings.work_dir / "active" / f"seed{seed}_{base_fp}_k{settings.al_k}_s{settings.al_steps}"


def predict_cases(checkpoint: Path, cases: Mapping[str, Path], out: Path, overlap: float,
                  probabilities: bool = False) -> Path:
    """`rsuper predict` outputs of ``cases`` (output name -> case folder) into ``out``, skipping finished ones;
    ``probabilities`` as `rsuper predict --probabilities`."""
    import torch

    from train.predict import load_network, predict_case

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net, config = load_network(checkpoint, device)
    for name in sorted(cases):
        done = out / name / ("probabilities.nii.gz" if probabilities else "summary.json")
        if not done.is_file():
            predict_case(net, config, cases[name] / "ct.nii.gz", out / name, overlap=overlap, device=device,
                         save_probabilities=probabilities)
    return out


def audit_scores(predictions: Path, records_of: Callable[[str], object | None], cases_root: Path,
                 organ_names: Mapping[int, str] | None = None) -> list[dict]:
    """Audit rows ``{ct_id, score, reasons}`` of a prediction folder, highest score first (organ label names: the
    phantom set's ``cases_root`` when not given)."""
    from train.data.cases import discover
    from train.review.config import AuditConfig
    from train.review.files import audit_predictions

    names = organ_names if organ_names is not None else discover(cases_root).organ_label_names
    results, _ = audit_predictions(predictions, records_of, AuditConfig(), cases_root=cases_root, organ_names=names)
    return [{"ct_id": r.audit.ct_id, "score": float(r.audit.score),
             "reasons": [getattr(x, "value", str(x)) for x in r.audit.reasons]} for r in results]


def inject_errors(records: Mapping[str, object], fraction: float, seed: int) -> dict[str, str]:
    """ct_id -> injected error kind for ``round(fraction * n)`` (at least one) of the CTs of ``records``.

    CTs are visited in a seeded random order and the kinds cycled from the ``seed``-th; a kind that no CT left can
    carry (e.g. no normal organ to call abnormal) is dropped from the cycle. Returns only the plan; :func:`corrupt`
    applies it.
    """
    from train.review.synthetic import ERROR_KINDS, inject_error

    rng = np.random.default_rng([seed, 22])
    want = max(1, round(fraction * len(records)))
    order = [sorted(records)[i] for i in rng.permutation(len(records))]
    plan: dict[str, str] = {}
    kinds, i = list(ERROR_KINDS), seed  # the cycle starts at a seed's own kind: few errors still cover every kind
    while len(plan) < want and kinds:
        kind = kinds[i % len(kinds)]
        ct = next((c for c in order if c not in plan and inject_error(records[c], kind, rng) is not None), None)
        if ct is None:  # no CT left can carry this kind: drop it from the cycle
            kinds.remove(kind)
            continue
        plan[ct] = kind
        i += 1
    return plan


def corrupt(records: Mapping[str, object], plan: Mapping[str, str], seed: int) -> dict[str, object]:
    """``records`` with the errors of ``plan`` injected (the same rng streams as :func:`inject_errors`)."""
    from train.review.synthetic import inject_error

    out = dict(records)
    for i, (ct, kind) in enumerate(plan.items()):
        out[ct] = inject_error(records[ct], kind, np.random.default_rng([seed, 22, i]))
    return out


def audit_precision(rows: Sequence[Mapping], plan: Mapping[str, str]) -> dict:
    """Precision at k = number of injected errors of an audit ranking (rows highest score first) and, per error
    kind, how many of its CTs are in that top k. ``chance`` is the precision of a random ranking."""
    from train.review.synthetic import ERROR_KINDS

    k = len(plan)
    top = {r["ct_id"] for r in rows[:k]}
    per_kind = {kind: {"injected": sum(v == kind for v in plan.values()),
                       "in_top_k": sum(v == kind and ct in top for ct, v in plan.items())} for kind in ERROR_KINDS}
    return {"k": k, "cts": len(rows), "precision_at_k": sum(ct in top for ct in plan) / k if k else math.nan,
            "chance": k / len(rows) if rows else math.nan, "per_kind": per_kind,
            "missed": sorted(f"{ct}:{kind}" for ct, kind in plan.items() if ct not in top)}


def retrain_config(settings: ScienceSettings, seed: int, checkpoint: Path, out_dir: Path):
    """The base arm's config, started from ``checkpoint`` for ``al_steps`` steps with the reports on at once (the
    base run's mask-first stage is over)."""
    overrides = [*settings.train_overrides, f"init_from={checkpoint}", f"optim.total_steps={settings.al_steps}",
                 f"optim.warmup_steps={min(10, settings.al_steps - 1)}", "optim.report_start_step=0",
                 "optim.report_ramp_steps=0"]
    return arm_config(settings.model_copy(update={"train_overrides": overrides}), BASE_ARM, seed, out_dir)


def run_active_seed(settings: ScienceSettings, seed: int, fingerprint: str) -> dict:
    """One seed's round (module docstring); writes and returns ``active.json`` in its folder, reused when there."""
    import torch

    from train.data.records import records_from_ground_truth
    from train.review.active import choose
    from train.science.runs import evaluate_run, record_train_seconds, run_dir_of, run_one, train_arm

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    base_entry = run_one(settings, BASE_ARM, seed, fingerprint) if not _finished(settings, seed, fingerprint) \
        else json.loads((run_dir_of(settings, BASE_ARM, seed, fingerprint)[0] / "result.json").read_text())
    base_dir, base_fp = run_dir_of(settings, BASE_ARM, seed, fingerprint)
    out = active_dir(settings, seed, base_fp)
    checkpoint = base_dir / "train" / "latest.pt"
    pool, test = settings.work_dir / "pool", settings.work_dir / "test"
    base = pool_cases(pool)
    truth = records_from_ground_truth(pool / "ground_truth.jsonl")
    mask_ids = seed_mask_ids(settings, seed)
    report_of = {c.files.ct_id: c.report_id for c in base}
    report_cts = sorted(ct for ct in report_of if ct not in mask_ids and report_of[ct] in truth)
    earlier = json.loads((out / "active.json").read_text()) if (out / "active.json").is_file() else {}

    # Steps 2-3: audit the base network's pool predictions against the true reports and choose. Both are redone on
    # every call (cheap); a retrain is reused only while its choice stands (after an audit change it does not).
    pool_pred = predict_cases(checkpoint, {ct: pool / "cases" / ct for ct in report_cts},
                              out / "pool_predictions", settings.predict_overlap)
    rows = audit_scores(pool_pred, lambda ct: truth.get(report_of.get(ct, "")), pool)
    chosen = {s: choose(rows, settings.al_k, s, seed=seed, exclude=mask_ids) for s in STRATEGIES}

    # Step 4: the same base weights, steps and seed; only the extra mask CTs differ.
    result: dict = {"seed": seed, "k": settings.al_k, "steps": settings.al_steps, "base_fingerprint": base_fp,
                    "base": {k: base_entry[k] for k in METRIC_KEYS}, "audit": rows,
                    "mask_cases_base": len(mask_ids), "scale": settings.scale}
    for strategy, picked in chosen.items():
        ids = mask_ids | {c["ct_id"] for c in picked}
        cases, _ = arm_cases(BASE_ARM, base, ids, truth)
        run_dir = out / strategy
        _start_over_unless_chosen(run_dir, [c["ct_id"] for c in picked], earlier.get(strategy, {}).get("chosen"))
        config = retrain_config(settings, seed, checkpoint, run_dir / "train")
        ckpt, train_s = train_arm(config, cases)
        train_s = record_train_seconds(run_dir, train_s)
        metrics, eval_s = evaluate_run(settings, ckpt, test, run_dir)
        result[strategy] = {**metrics, "chosen": [c["ct_id"] for c in picked],
                            "mask_cases": sum(c.has_mask for c in cases),
                            "report_cases": sum(not c.has_mask for c in cases),
                            "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1)}
    result["difference"] = {k: result["disagreement"][k] - result["random"][k] for k in METRIC_KEYS}

    # The audit's precision with this base network: its pool report CTs and test CTs, 10 % with an injected error.
    result["precision"] = error_audit(settings, seed, checkpoint, base_dir / "predictions", pool_pred, truth,
                                      report_of, out)
    (out / "active.json").write_text(json.dumps(result, indent=1))
    return result


def _start_over_unless_chosen(run_dir: Path, chosen: list[str], recorded: list[str] | None) -> None:
    """Empty ``run_dir`` (checkpoint, predictions, timing) unless it was trained on ``chosen``, as its
    ``chosen.json`` (or, for rounds made before it was written, the round's ``active.json``: ``recorded``) says;
    then record ``chosen`` there. Resuming another choice's checkpoint would score the wrong masks."""
    import shutil

    path = run_dir / "chosen.json"
    done = json.loads(path.read_text()) if path.is_file() else recorded
    if done != chosen and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(chosen))


def error_audit(settings: ScienceSettings, seed: int, checkpoint: Path, test_pred: Path, pool_pred: Path,
                pool_truth: Mapping, pool_report_of: Mapping[str, str], out: Path) -> dict:
    """Precision@k of the audit on the base network's predictions of the pool's report CTs and the test CTs, with
    errors injected into ``al_error_fraction`` of their true records (keys ``pool-<ct>`` and ``test-<ct>``).

    The CTs are predicted again with lesion probabilities (`rsuper predict --probabilities`), which the audit
    weighs predicted lesions by; ``test_pred`` and ``pool_pred`` say which CTs were predicted."""
    from train.data.records import records_from_ground_truth

    test = settings.work_dir / "test"
    test_truth = records_from_ground_truth(test / "ground_truth.jsonl")
    test_report_of = {c.files.ct_id: c.report_id for c in pool_cases(test)}
    test_cts = sorted(p.parent.name for p in test_pred.glob("*/summary.json"))
    pool_cts = sorted(p.parent.name for p in pool_pred.glob("*/summary.json"))
    records: dict[str, object] = {}
    folders: dict[str, Path] = {}
    for prefix, cts, truth, report_of in (("pool", pool_cts, pool_truth, pool_report_of),
                                          ("test", test_cts, test_truth, test_report_of)):
        for ct in cts:
            rec = truth.get(report_of.get(ct, ""))
            if rec is not None:
                records[f"{prefix}-{ct}"] = rec
                folders[f"{prefix}-{ct}"] = settings.work_dir / prefix / "cases" / ct
    # One prediction folder with both sets, so one audit ranks them together.
    both = predict_cases(checkpoint, folders, out / "error_audit" / "scored", settings.predict_overlap,
                         probabilities=True)
    plan = inject_errors(records, settings.al_error_fraction, seed)
    bad = corrupt(records, plan, seed)
    cases_root = out / "error_audit" / "cases"
    cases_root.mkdir(parents=True, exist_ok=True)
    for name in records:  # the audit reads each CT's organ map by its folder name
        prefix, ct = name.split("-", 1)
        link = cases_root / name
        if not link.exists():
            link.symlink_to((settings.work_dir / prefix / "cases" / ct).resolve())
    from train.data.cases import discover

    rows = audit_scores(both, bad.get, cases_root, discover(settings.work_dir / "pool").organ_label_names)
    return {**audit_precision(rows, plan), "injected": plan}


def _finished(settings: ScienceSettings, seed: int, fingerprint: str) -> bool:
    from train.science.runs import run_dir_of

    return (run_dir_of(settings, BASE_ARM, seed, fingerprint)[0] / "result.json").is_file()


# --------------------------------------------------------------------------------------------- report


def summarise_active(results: Sequence[Mapping]) -> dict:
    """Over seeds: per metric the paired difference's mean, sample std, min, max and seeds where disagreement
    wins; and the precision@k per seed and pooled (errors found / errors)."""
    out: dict = {"seeds": [r["seed"] for r in results], "difference": {}}
    for k in METRIC_KEYS:
        d = np.array([r["difference"][k] for r in results], float)
        d = d[~np.isnan(d)]
        out["difference"][k] = {"mean": float(d.mean()) if d.size else math.nan,
                                "std": float(d.std(ddof=1)) if d.size > 1 else 0.0,
                                "min": float(d.min()) if d.size else math.nan,
                                "max": float(d.max()) if d.size else math.nan,
                                "wins": int((d > 0).sum()), "n": int(d.size)}
    found = sum(round(r["precision"]["precision_at_k"] * r["precision"]["k"]) for r in results)
    errors = sum(r["precision"]["k"] for r in results)
    out["precision_at_k_pooled"] = found / errors if errors else math.nan
    kinds: dict[str, dict[str, int]] = {}
    for r in results:
        for kind, v in r["precision"]["per_kind"].items():
            acc = kinds.setdefault(kind, {"injected": 0, "in_top_k": 0})
            acc["injected"] += v["injected"]
            acc["in_top_k"] += v["in_top_k"]
    out["per_kind"] = kinds
    return out


def active_markdown(results: Sequence[Mapping], meta: Mapping) -> str:
    """results_active.md: the paired difference table, the per-seed rows and the audit's precision@k."""
    s = summarise_active(results)
    lines = [f"# Active learning on phantoms: results ({meta.get('scale', '?')} scale)", "",
             "Generated by `benchmarks/bench_science.py --protocol active`; protocol in docs/science.md.", "",
             "## Disagreement − random, paired by seed", "",
             "| metric | mean | std | min | max | seeds where disagreement is higher |", "|---|---|---|---|---|---|"]
    for k in ("dice", "dice_small", "auroc", "f1", "sensitivity", "specificity"):
        d = s["difference"][k]
        lines.append(f"| {k} | {d['mean']:+.4f} | {d['std']:.4f} | {d['min']:+.4f} | {d['max']:+.4f} "
                     f"| {d['wins']}/{d['n']} |")
    lines += ["", "## Per seed (tumour Dice; AUROC)", "",
              "| seed | base Dice | disagreement Dice | random Dice | difference | base AUROC | disagreement AUROC "
              "| random AUROC | chosen by disagreement | chosen at random | retrain s (dis / rnd) |", "|---" * 11 + "|"]
    for r in results:
        dis, rnd = r["disagreement"], r["random"]
        lines.append(f"| {r['seed']} | {r['base']['dice']:.4f} | {dis['dice']:.4f} | {rnd['dice']:.4f} "
                     f"| {r['difference']['dice']:+.4f} | {r['base']['auroc']:.3f} | {dis['auroc']:.3f} "
                     f"| {rnd['auroc']:.3f} | {', '.join(dis['chosen'])} | {', '.join(rnd['chosen'])} "
                     f"| {dis['train_seconds']:.0f} / {rnd['train_seconds']:.0f} |")
    lines += ["", "## Audit precision at k = number of injected errors (base network of each seed)", "",
              "| seed | CTs | errors (k) | precision@k | chance | missed (CT: kind) |", "|---|---|---|---|---|---|"]
    for r in results:
        p = r["precision"]
        lines.append(f"| {r['seed']} | {p['cts']} | {p['k']} | {p['precision_at_k']:.3f} | {p['chance']:.3f} "
                     f"| {', '.join(p['missed']) or '–'} |")
    lines.append(f"| pooled | | | {s['precision_at_k_pooled']:.3f} | | |")
    lines += ["", "| error kind | injected | in top k |", "|---|---|---|"]
    lines += [f"| {kind} | {v['injected']} | {v['in_top_k']} |" for kind, v in s["per_kind"].items()]
    lines += ["", "## Setting", ""] + [f"- {k}: {v}" for k, v in meta.items()]
    return "\n".join(lines) + "\n"


def write_active(path: Path, results: Sequence[Mapping], meta: Mapping) -> None:
    """``path`` (json: meta, summary, per-seed results without the full audit rows) and the .md next to it."""
    import os

    slim = [{k: v for k, v in r.items() if k != "audit"} for r in results]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"meta": dict(meta), "summary": summarise_active(results), "seeds": slim},
                              indent=1) + "\n")
    os.replace(tmp, path)
    path.with_suffix(".md").write_text(active_markdown(results, meta), encoding="utf-8")
