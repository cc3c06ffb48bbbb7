"""Does report supervision help? Phantom benchmark of masks-only against masks + reports (issue 8).

Three arms and one control, trained with the same network, schedule and mask crops per step (the report arms add
their report crops on top), then scored on one held-out phantom set:

* ``masks_only``: only the ``mask_cases`` CTs with voxel masks.
* ``masks_reports_extracted``: the same plus every other pool CT, supervised only by its report, the records coming
  from ``rsuper ingest`` + ``rsuper extract`` (embedded LLM) on the report text.
* ``masks_reports_truth``: the same as above with the phantom generator's ground-truth records, which separates
  extraction errors from loss behaviour.
* ``masks_all`` (control): every pool CT keeps its voxel mask, the supervision the report arms stand in for. Unless it
  beats ``masks_only``, the recipe cannot turn more tumour CTs into a better network, and no report loss can show.

Steps: generate a training pool and a stratified test set (``test_free_fraction`` tumour-free, tumours 5-40 mm, half
of the tumour-bearing CTs with the largest tumour below 20 mm), extract the pool's reports once (resumable, sharded
over ``extract_workers`` processes with one store each), train / predict / evaluate each (arm, seed), write
``results.json`` after every (arm, seed) and finally ``results.md`` with a plot. A rerun reuses every finished
piece under ``work_dir`` (phantoms, extraction stores, checkpoints, per-run ``result.json``); run directories are
named by a fingerprint of the run's resolved training config, so changed settings start a new run.

Evaluation: ``rsuper predict`` outputs (``train.predict.predict_case``) per test CT, then per CT (organs pooled):
the CT is called positive when its predicted lesion volume (mm3, summed over organs) reaches ``threshold_mm3``;
the AUROC score is the largest lesion probability in the CT. Tumour Dice is the Dice of the union of all lesion
classes against the phantom's lesion mask, averaged over tumour-bearing CTs. The ``_small`` metrics keep the
tumour-free CTs and the CTs whose largest tumour is below 20 mm. ``rsuper evaluate`` (per organ, Dice / NSD) is
also run on every prediction folder and kept next to it.

Usage::

    python benchmarks/bench_science.py                     # CPU scale, 3 seeds (5-6 hours on 2 free cores)
    python benchmarks/bench_science.py --scale smoke       # minutes: tiny pool, 1 seed, a few steps
    python benchmarks/bench_science.py --scale gpu         # full scale on a GPU
    python benchmarks/bench_science.py --seeds 0 --arms masks_only masks_reports_truth
    python benchmarks/bench_science.py --report-only       # rewrite results.json / .md / plot from the runs
    python benchmarks/bench_science.py --rescore           # predict and score the finished runs again

Prints one JSON line per finished (arm, seed) and a final summary line.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

REPO = Path(__file__).resolve().parent.parent
ARMS = ("masks_only", "masks_reports_extracted", "masks_reports_truth", "masks_all")
MASK_ARMS = ("masks_only", "masks_all")  # no report crops: every crop of a step is a mask crop
DETECTION_KEYS = ("f1", "sensitivity", "specificity", "auroc")
METRIC_KEYS = (*DETECTION_KEYS, "dice", *(f"{k}_small" for k in DETECTION_KEYS), "dice_small")


class ScienceSettings(BaseModel):
    """Scale and protocol of one benchmark run (the training recipe itself is the YAML in ``train_config``)."""

    model_config = ConfigDict(extra="forbid")

    scale: str = Field(description="Preset name, recorded with every result.")
    train_config: Path = Field(description="TrainConfig YAML shared by the three arms (configs/science/).")
    work_dir: Path = Field(description="Phantoms, stores, checkpoints and predictions (ignored by git).")
    results: Path = Field(description="results.json path; results.md and the plot go next to it.")
    pool_cases: int = Field(ge=2, description="Training pool: mask cases + report cases.")
    pool_seed: int = 11
    pool_tumor_count_probabilities: tuple[float, ...] = Field(
        (0.25, 0.4, 0.2, 0.15), description="Chance of 0, 1, 2, 3 tumours per pool CT (the generator's default). "
        "With ten mask CTs of the default mix the lesion channels memorise their few tumours (docs/training.md).")
    mask_cases: int = Field(ge=1, description="Pool CTs that keep their voxel masks (drawn per seed, every tumour "
                            "organ covered).")
    test_cases: int = Field(ge=2, description="Held-out phantoms scored by every arm.")
    test_seed: int = 12
    test_free_fraction: float = Field(0.3, ge=0, lt=1, description="Tumour-free share of the test set.")
    test_small_fraction: float = Field(0.5, ge=0, le=1, description="Share of tumour CTs whose largest is < small_mm.")
    test_min_mm: float = Field(5.0, gt=0, description="Smallest tumour diameter allowed in the test set (mm).")
    test_max_mm: float = Field(40.0, gt=0, description="Largest tumour diameter allowed in the test set (mm).")
    small_mm: float = Field(20.0, gt=0, description="Small-tumour stratum: largest tumour diameter below this (mm).")
    phantom_shape: tuple[int, int, int] = (96, 96, 64)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    arms: list[str] = Field(default_factory=lambda: list(ARMS))
    train_overrides: list[str] = Field(default_factory=list, description="Extra `--set` style overrides.")
    extract_workers: int = Field(2, ge=1, description="Parallel `rsuper extract` processes (one store each); "
                                 "while they run, `jobs - extract_workers` runs train (at least one).")
    extract_threads: int = Field(1, ge=1, description="llama.cpp threads per extraction process.")
    predict_overlap: float = Field(0.25, ge=0, lt=1, description="Sliding-window overlap at test time.")
    threshold_mm3: float = Field(100.0, gt=0, description="Per-CT operating point: predicted lesion volume (mm3).")
    official_evaluate: bool = Field(True, description="Also run `rsuper evaluate` on every prediction folder.")
    torch_threads: int | None = Field(
        1, ge=1, description="torch.set_num_threads per run (None: torch's default); 1 avoids thread thrashing "
        "on a shared CPU.")
    jobs: int = Field(1, ge=1, description="(arm, seed) runs trained in parallel worker processes.")


PRESETS: dict[str, dict[str, Any]] = {
    # Plumbing check: a tiny pool, a few steps, no LLM unless the extracted arm is asked for.
    "smoke": dict(train_config="configs/science/cpu.yaml", work_dir="runs/science/smoke",
                  results="runs/science/smoke/results.json", pool_cases=8, mask_cases=3, test_cases=6,
                  phantom_shape=(64, 64, 48), seeds=[0], arms=["masks_only", "masks_reports_truth"],
                  train_overrides=["optim.total_steps=6", "optim.warmup_steps=2", "data.patch_size=[32,32,32]"],
                  official_evaluate=False),
    # 5-6 hours on two free cores for three seeds and four arms at 2,400 steps (about 1 h 50 min per seed), plus
    # 1.9 h of one core for the LLM extraction of 60 reports (once).
    "cpu": dict(train_config="configs/science/cpu.yaml", work_dir="runs/science/cpu",
                results="benchmarks/science/results.json", pool_cases=60, mask_cases=10, test_cases=30, jobs=2,
                extract_workers=1, pool_tumor_count_probabilities=(0.1, 0.4, 0.3, 0.2)),
    # Full scale (a GPU): bigger pool and test set, finer phantoms, a wider network trained longer.
    "gpu": dict(train_config="configs/science/gpu.yaml", work_dir="runs/science/gpu",
                results="benchmarks/science/results_gpu.json", pool_cases=200, mask_cases=10, test_cases=60,
                phantom_shape=(128, 128, 96), extract_workers=1, predict_overlap=0.5, torch_threads=None,
                pool_tumor_count_probabilities=(0.1, 0.4, 0.3, 0.2)),
}


# --------------------------------------------------------------------------------------------- phantoms


def tumor_diameters(config: Any, index: int) -> list[float]:
    """Largest true diameter (mm) of each tumour of phantom ``index``, without rendering it.

    Draws from the same random stream as :func:`train.data.phantoms.generate_case` (anatomy stream, then count,
    then tumours), so it agrees with the rendered case's ``true_diameters_mm`` (tested).
    """
    from train.data.phantoms import sample_anatomy, sample_tumors

    rng = np.random.default_rng([config.seed, index, 0])
    anatomy = sample_anatomy(rng)
    count = int(rng.choice(len(config.tumor_count_probabilities), p=config.tumor_count_probabilities))
    return [float(t.diameters_mm[0]) for t in sample_tumors(rng, anatomy, count, config.small_lesion_probability)]


def test_stratum(diameters_mm: list[float], min_mm: float, max_mm: float, small_mm: float) -> str | None:
    """``free``, ``small`` (largest < small_mm) or ``large``; None when a tumour is outside [min_mm, max_mm]."""
    if not diameters_mm:
        return "free"
    if min(diameters_mm) < min_mm or max(diameters_mm) > max_mm:
        return None
    return "small" if max(diameters_mm) < small_mm else "large"


def test_quotas(n: int, free_fraction: float, small_fraction: float) -> dict[str, int]:
    """Cases per stratum for a test set of ``n`` CTs."""
    free = round(n * free_fraction)
    small = round((n - free) * small_fraction)
    return {"free": free, "small": small, "large": n - free - small}


def select_test_indices(settings: ScienceSettings, max_candidates_factor: int = 40) -> list[int]:
    """Phantom indices of the test set (seed ``test_seed``) filling the stratum quotas in index order.

    Raises:
        RuntimeError: the quotas cannot be met within ``max_candidates_factor * test_cases`` candidates.
    """
    config = test_phantom_config(settings)
    need = test_quotas(settings.test_cases, settings.test_free_fraction, settings.test_small_fraction)
    chosen: list[int] = []
    for index in range(max_candidates_factor * settings.test_cases):
        stratum = test_stratum(tumor_diameters(config, index), settings.test_min_mm, settings.test_max_mm,
                               settings.small_mm)
        if stratum is not None and need[stratum] > 0:
            need[stratum] -= 1
            chosen.append(index)
            if not any(need.values()):
                return chosen
    raise RuntimeError(f"test set: quotas not met after {max_candidates_factor * settings.test_cases} candidates "
                       f"(missing {need})")


def test_phantom_config(settings: ScienceSettings):
    """Test phantoms: no 'too small to characterise' tumours (all are 5 mm or more by construction)."""
    from train.data.phantoms import PhantomConfig

    return PhantomConfig(n=max(1, settings.test_cases), seed=settings.test_seed, shape=settings.phantom_shape,
                         small_lesion_probability=0.0)


SUBSET_MANIFEST = "subset.json"


def subset_manifest(config: Any, indices: list[int]) -> dict:
    """What a rendered phantom subset was made from: the generator settings and the phantom indices."""
    return {"generator": config.model_dump(mode="json"), "indices": list(indices)}


def ensure_case_subset(out: Path, config: Any, indices: list[int]) -> Path:
    """Render the subset unless ``out`` already holds exactly it (checked against its ``subset.json``)."""
    manifest = subset_manifest(config, indices)
    path = out / SUBSET_MANIFEST
    if path.is_file() and json.loads(path.read_text()) == manifest and (out / "ground_truth.jsonl").is_file():
        return out
    if out.exists():
        shutil.rmtree(out)  # another pool or test set: its cases must not linger
    write_case_subset(out, config, indices)
    path.write_text(json.dumps(manifest, sort_keys=True) + "\n")
    return out


def write_case_subset(out: Path, config: Any, indices: list[int]) -> None:
    """Render phantoms ``indices`` of ``config`` into ``out`` with the layout of ``rsuper phantoms``."""
    from train.data.phantoms import LESION_LABELS, ORGAN_LABELS, generate_case, write_case, write_csv_atomic

    (out / "cases").mkdir(parents=True, exist_ok=True)
    (out / "labels.json").write_text(json.dumps({str(k): v for k, v in ORGAN_LABELS.items()}, indent=1) + "\n")
    (out / "lesion_labels.json").write_text(json.dumps({str(k): v for k, v in LESION_LABELS.items()}, indent=1) + "\n")
    reports, mapping, truth = [], [], []
    for i in indices:
        case = generate_case(config, i)
        write_case(case, out / "cases" / case.ct_id)
        reports.append((case.report_id, case.report))
        mapping.append((case.ct_id, case.report_id))
        truth.append(json.dumps(case.ground_truth))
    write_csv_atomic(out / "reports.csv", ["Accession Number", "Report Text"], reports)
    write_csv_atomic(out / "case_reports.csv", ["ct_id", "report_id"], mapping)
    tmp = out / "ground_truth.jsonl.tmp"
    tmp.write_text("\n".join(truth) + "\n")
    os.replace(tmp, out / "ground_truth.jsonl")  # written last: its presence marks a finished set


def ensure_pool(settings: ScienceSettings) -> Path:
    """The training pool (seed ``pool_seed``, tumour mix ``pool_tumor_count_probabilities``, tiny unsized
    tumours included)."""
    from train.data.phantoms import PhantomConfig

    config = PhantomConfig(n=settings.pool_cases, seed=settings.pool_seed, shape=settings.phantom_shape,
                           tumor_count_probabilities=settings.pool_tumor_count_probabilities)
    return ensure_case_subset(settings.work_dir / "pool", config, list(range(settings.pool_cases)))


def ensure_test(settings: ScienceSettings) -> Path:
    """The stratified held-out test set."""
    return ensure_case_subset(settings.work_dir / "test", test_phantom_config(settings), select_test_indices(settings))


def read_truth(root: Path) -> dict[str, dict]:
    """ct_id -> ground-truth row of a phantom set.

    Raises:
        ValueError: a line that is not JSON or lacks ``ct_id`` or a tumour's ``organ``, naming file and line.
    """
    path = root / "ground_truth.jsonl"
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if any("organ" not in t for t in row["tumors"]):
                raise KeyError("organ")
            out[row["ct_id"]] = row
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}, line {n}: not a ground-truth record ({exc!r})") from exc
    return out


# --------------------------------------------------------------------------------------------- extraction


def _rsuper() -> list[str]:
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
        subprocess.run([*_rsuper(), "ingest", str(shard_csv), "--db", str(store), "--json"], check=True,
                       stdout=subprocess.DEVNULL)
        log = (out / f"shard{k}.log").open("a")
        procs.append(subprocess.Popen(
            [*_rsuper(), "extract", "--db", str(store), "--backend", "local", "--threads",
             str(settings.extract_threads), "--json", "--no-progress"],
            stdout=log, stderr=subprocess.STDOUT))
    return procs


def finish_extraction(procs: list[subprocess.Popen], started: float) -> float:
    """Wait for the extraction processes; returns the wall seconds since ``started``.

    Raises:
        RuntimeError: a process failed (its log is under work_dir/extract/).
    """
    for p in procs:
        if p.wait() != 0:
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


def stored_extraction_meta(settings: ScienceSettings) -> dict:
    """Agreement with the truth (from the last extraction) and the stored LLM cost, when the pool was extracted.

    The cost comes from the stores, not from this call's wall time (``extraction_wall_s``, ~0 when reused).
    """
    summary = settings.work_dir / "extract" / "summary.json"
    if not summary.is_file():
        return {}
    return {**json.loads(summary.read_text()), "extraction_cost": extraction_cost(settings)}


def extraction_agreement(extracted: dict, truth: dict) -> dict[str, float | int]:
    """How far the extracted records agree with the generator's truth, per report.

    Returns counts and rates: reports extracted, reports whose set of tumour organs matches, reports whose
    number of tumour entries matches, and the mean absolute error (mm) of the largest diameter per organ where
    both sides give one.
    """
    organ_ok = count_ok = n = 0
    errors = []
    for rid, t in truth.items():
        e = extracted.get(rid)
        if e is None:
            continue
        n += 1
        organ_ok += {x.organ for x in e.tumors} == {x.organ for x in t.tumors}
        count_ok += sum(x.count for x in e.tumors) == len(t.tumors)
        for organ in {x.organ for x in t.tumors}:
            a = [max(x.diameters_mm) for x in e.tumors if x.organ == organ and x.diameters_mm]
            b = [max(x.diameters_mm) for x in t.tumors if x.organ == organ and x.diameters_mm]
            if a and b:
                errors.append(abs(max(a) - max(b)))
    return {"reports": len(truth), "extracted": n, "organs_match": organ_ok / n if n else math.nan,
            "count_match": count_ok / n if n else math.nan,
            "largest_diameter_mae_mm": float(np.mean(errors)) if errors else math.nan}


# --------------------------------------------------------------------------------------------- training


def mask_case_ids(tumour_organs: dict[str, frozenset[str]], n_mask: int, seed: int) -> set[str]:
    """The pool CTs that keep their masks for ``seed`` (same for every arm of that seed).

    A seeded draw, stratified so that every organ with a tumour in the pool has a mask CT with a tumour there
    (while ``n_mask`` allows). Reports refine a tumour class the masks introduce; with no voxel example of a
    pancreas tumour the report losses taught the pancreas-lesion channel to mark the whole organ (docs/science.md,
    seed 2 of the sixth run). A draw that already covers every organ is kept as it is.

    Args:
        tumour_organs: ct_id -> organs holding a tumour in that CT (empty for a tumour-free CT).
    """
    rng = np.random.default_rng([seed, 8])
    ordered = sorted(tumour_organs)
    drawn = [ordered[i] for i in rng.permutation(len(ordered))]
    chosen: list[str] = []
    for organ in sorted({o for organs in tumour_organs.values() for o in organs}):
        if len(chosen) < n_mask and not any(organ in tumour_organs[c] for c in chosen):
            chosen.append(next(c for c in drawn if organ in tumour_organs[c]))
    return {*chosen, *[c for c in drawn if c not in chosen][:n_mask - len(chosen)]}


def pool_tumour_organs(pool: Path) -> dict[str, frozenset[str]]:
    """ct_id -> organs holding a tumour, from the pool's ``ground_truth.jsonl``."""
    return {ct: frozenset(t["organ"] for t in row["tumors"]) for ct, row in read_truth(pool).items()}


def arm_cases(arm: str, base_cases: list, mask_ids: set[str], records: dict) -> tuple[list, int]:
    """Training cases of one arm and the number of report CTs left out (no record).

    Args:
        arm: one of :data:`ARMS`.
        base_cases: TrainingCase per pool CT with its lesion mask and no records.
        mask_ids: CTs that keep their masks (``masks_all``: every CT keeps it).
        records: report_id -> CaseRecords for the report arms (truth or extracted).
    """
    from train.data.dataset import TrainingCase

    out, dropped = [], 0
    for case in base_cases:
        if arm == "masks_all" or case.files.ct_id in mask_ids:
            out.append(TrainingCase(case.files, None))
        elif arm not in MASK_ARMS:
            rec = records.get(case.report_id)
            if rec is None:
                dropped += 1
                continue
            out.append(TrainingCase(dataclasses.replace(case.files, lesion_mask_path=None), rec))
    return out, dropped


@dataclasses.dataclass(frozen=True)
class PoolCase:
    """A pool CT before the arm decides its supervision."""

    files: Any
    report_id: str


def pool_cases(pool: Path) -> list[PoolCase]:
    from train.data.cases import build_cases, discover, training_cases

    build = build_cases(pool, pool / "case_reports.csv", check_values=False)
    if build.problems:
        raise RuntimeError(f"{pool}: {build.problems[:3]}")
    layout = discover(pool)
    cases = training_cases(build.table, {}, layout.organ_label_names, layout.lesion_label_names, split=None)
    report_of = dict(zip(build.table.column("ct_id").to_pylist(), build.table.column("report_id").to_pylist()))
    return [PoolCase(c.files, report_of[c.files.ct_id]) for c in cases]


def arm_config(settings: ScienceSettings, arm: str, seed: int, out_dir: Path):
    """The TrainConfig of one (arm, seed): the YAML plus overrides.

    The report arms add report crops to the mask crops of each step; masks-only and masks-all batches hold just
    those mask crops (``mask_fraction x batch_size`` of them, which must be whole), so every arm sees as many mask
    crops per step. Taking the report crops out of a fixed batch instead costs the masks a quarter of their crops,
    which alone moved the masks-only AUROC from 0.77 to 0.48 (docs/science.md).
    """
    from train.config import load_config

    path = REPO / settings.train_config if not settings.train_config.is_absolute() else settings.train_config
    overrides = [*settings.train_overrides, f"output_dir={out_dir}", f"seed={seed}",
                 f"data.root={settings.work_dir / 'pool'}", f"data.cache_dir={settings.work_dir / 'cache'}",
                 f"data.records={'store' if arm == 'masks_reports_extracted' else 'truth'}"]
    config = load_config(path, overrides)
    if arm not in MASK_ARMS:
        return config
    mask_crops = config.data.mask_fraction * config.data.batch_size
    if abs(mask_crops - round(mask_crops)) > 1e-9 or round(mask_crops) < 1:
        raise ValueError(f"{path}: data.mask_fraction x data.batch_size = {mask_crops:g} mask crops per step; "
                         "it must be a whole number for the mask arms to see the same mask crops")
    return load_config(path, [*overrides, f"data.batch_size={round(mask_crops)}", "data.mask_fraction=1.0",
                              "loss.report_weight=0.0"])


def train_arm(config: Any, cases: list) -> tuple[Path, float]:
    """Train (resuming a killed run) and return the checkpoint and the training seconds of this call (0 when the
    checkpoint had finished already)."""
    from train.datasource import CaseData
    from train.trainer import Trainer, setup_distributed

    digest = hashlib.sha256()
    for c in cases:
        digest.update(f"{c.files.ct_id}:{c.files.content_sha256}:{c.has_mask}:{c.records!r}\n".encode())
    cache = Path(config.data.cache_dir)
    data = CaseData(config.data, cases, [], cache, digest.hexdigest()[:16])
    data.dataset.prepare(progress=False)
    t0 = time.perf_counter()
    # The benchmark fingerprint guards the settings; code edits elsewhere may change the trainer's own hash.
    trainer = Trainer(config, data, setup_distributed(config.device), resume=True, allow_config_change=True)
    if trainer.step >= config.optim.total_steps:  # finished earlier (a rescore)
        return Path(config.output_dir) / "latest.pt", 0.0
    trainer.fit()
    if trainer.step < config.optim.total_steps:  # stopped by a signal: never score a half-trained network
        raise RuntimeError(f"{config.output_dir}: training stopped at step {trainer.step}; rerun to resume")
    return Path(config.output_dir) / "latest.pt", time.perf_counter() - t0


# --------------------------------------------------------------------------------------------- evaluation


def predict_test(checkpoint: Path, test: Path, out: Path, overlap: float) -> dict[str, dict]:
    """``rsuper predict`` on every test CT (skipping finished ones); ct_id -> summary."""
    import torch

    from train.predict import load_network, predict_case

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net, config = load_network(checkpoint, device)
    summaries = {}
    for case_dir in sorted((test / "cases").iterdir()):
        done = out / case_dir.name / "summary.json"
        if done.is_file():
            summaries[case_dir.name] = json.loads(done.read_text())
            continue
        summaries[case_dir.name] = predict_case(net, config, case_dir / "ct.nii.gz", out / case_dir.name,
                                                overlap=overlap, device=device)
    return summaries


def lesion_dice(pred_lesions: Path, truth_lesions: Path) -> float:
    """Dice of the union of all lesion classes (NaN when the truth is empty); both maps on the same grid."""
    import nibabel as nib
    import torch

    from train.evaluate import dice_per_channel

    pred = np.asarray(nib.load(str(pred_lesions)).dataobj) > 0
    truth = np.asarray(nib.load(str(truth_lesions)).dataobj) > 0
    if pred.shape != truth.shape:
        raise ValueError(f"{pred_lesions}: shape {pred.shape} differs from {truth_lesions} {truth.shape}")
    return dice_per_channel(torch.from_numpy(pred[None]), torch.from_numpy(truth[None]))[0]


def per_ct_metrics(summaries: dict[str, dict], truth: dict[str, dict], dice: dict[str, float],
                   threshold_mm3: float, small_mm: float) -> dict[str, float | int]:
    """Per-CT detection (organs pooled) and mean tumour Dice, overall and for the small-tumour stratum.

    Args:
        summaries: ct_id -> ``summary.json`` of ``rsuper predict``.
        truth: ct_id -> ground-truth row (``tumors[].true_diameters_mm``).
        dice: ct_id -> union lesion Dice (tumour-bearing CTs).
        threshold_mm3: a CT is predicted positive when its summed predicted lesion volume reaches this.
        small_mm: small stratum: tumour-free CTs and CTs whose largest tumour is below this diameter.
    """
    from train.evaluate import detection_metrics

    rows = []
    for ct_id, s in summaries.items():
        sizes = [max(t["true_diameters_mm"]) for t in truth[ct_id]["tumors"]]
        organs = s["organs"].values()
        rows.append({
            "volume": sum(o["lesion_volume_mm3"] for o in organs),
            "score": max((o["max_probability"] for o in organs), default=0.0),
            "positive": bool(sizes), "small": bool(sizes) and max(sizes) < small_mm, "ct_id": ct_id,
        })
    out: dict[str, float | int] = {}
    for suffix, keep in (("", lambda r: True), ("_small", lambda r: not r["positive"] or r["small"])):
        sel = [r for r in rows if keep(r)]
        m = detection_metrics([r["volume"] for r in sel], [r["score"] for r in sel], [r["positive"] for r in sel],
                              threshold_mm3, sweep=())
        for k in DETECTION_KEYS:
            out[k + suffix] = m[k]
        out["n_positive" + suffix] = m["n_positive"]
        out["n_negative" + suffix] = m["n_negative"]
        d = [dice[r["ct_id"]] for r in sel if r["positive"] and not math.isnan(dice.get(r["ct_id"], math.nan))]
        out["dice" + suffix] = float(np.mean(d)) if d else math.nan
    return out


def official_evaluate(pred: Path, test: Path, out: Path, threshold_mm3: float) -> None:
    """``rsuper evaluate`` (per-organ Dice / NSD and detection) into ``out``; its table goes to out/table.txt."""
    out.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([*_rsuper(), "evaluate", str(pred), "--truth", str(test), "--records", "truth",
                          "--threshold-mm3", str(threshold_mm3), "--out", str(out)],
                         capture_output=True, text=True)
    (out / "table.txt").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        raise RuntimeError(f"rsuper evaluate failed ({res.returncode}): see {out / 'table.txt'}")


def evaluate_run(settings: ScienceSettings, checkpoint: Path, test: Path, run_dir: Path) -> tuple[dict, float]:
    t0 = time.perf_counter()
    pred = run_dir / "predictions"
    summaries = predict_test(checkpoint, test, pred, settings.predict_overlap)
    truth = read_truth(test)
    dice = {ct: lesion_dice(pred / ct / "lesions.nii.gz", test / "cases" / ct / "lesions.nii.gz")
            for ct in summaries if truth[ct]["tumors"]}
    metrics = per_ct_metrics(summaries, truth, dice, settings.threshold_mm3, settings.small_mm)
    if settings.official_evaluate:
        official_evaluate(pred, test, run_dir / "evaluate", settings.threshold_mm3)
    return metrics, time.perf_counter() - t0


# --------------------------------------------------------------------------------------------- results


def settings_fingerprint(settings: ScienceSettings) -> str:
    """sha256 (12 hex) of the benchmark settings that decide a result (data, thresholds; not paths, seeds, arms or
    worker counts). The training recipe is covered per run by :func:`run_fingerprint`."""
    keep = settings.model_dump(mode="json", exclude={"work_dir", "results", "seeds", "arms", "extract_workers",
                                                     "extract_threads", "official_evaluate", "torch_threads",
                                                     "jobs", "scale", "train_config", "train_overrides"})
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


# Loss fields that only act through the report losses: with report_weight 0 they cannot change a run.
_REPORT_LOSS_PREFIXES = ("ball_", "volume_", "attenuation_", "presence_", "count_prior_", "group_margin_")


def run_fingerprint(fingerprint: str, config: Any, mask_ids: set[str] | None = None) -> str:
    """sha256 (12 hex) of the settings fingerprint, one run's resolved TrainConfig (defaults included) and the
    CTs that keep their masks (``None`` where every CT keeps it).

    Paths are left out (work directories may differ); so are the report-loss fields and the report schedule of a
    run whose report weight is 0, so changing them does not retrain the mask arms. Code is not covered.
    """
    dump = config.model_dump(mode="json", exclude={"output_dir": True, "data": {"root", "cache_dir"}})
    if dump["loss"]["report_weight"] == 0:
        dump["loss"] = {k: v for k, v in dump["loss"].items() if not k.startswith(_REPORT_LOSS_PREFIXES)}
        dump["optim"] = {k: v for k, v in dump["optim"].items() if not k.startswith("report_")}
    if mask_ids is not None:
        dump["mask_ct_ids"] = sorted(mask_ids)
    return hashlib.sha256((fingerprint + json.dumps(dump, sort_keys=True)).encode()).hexdigest()[:12]


def write_results(path: Path, entries: list[dict]) -> None:
    """Atomically write the results list sorted by (arm order, seed)."""
    entries = sorted(entries, key=lambda e: (ARMS.index(e["arm"]), e["seed"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(entries, indent=1) + "\n")
    os.replace(tmp, path)


def summarise(entries: list[dict]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """arm -> metric -> (mean, sample std (0 for one seed), seeds) over the entries' seeds; NaNs skipped."""
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for arm in ARMS:
        rows = [e for e in entries if e["arm"] == arm]
        if not rows:
            continue
        out[arm] = {}
        for k in (*METRIC_KEYS, "train_seconds", "eval_seconds"):
            out[arm][k] = _mean_std([r[k] for r in rows if r.get(k) is not None])
    return out


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample std (0 for one value), count) of the non-NaN values."""
    v = np.array(values, float)
    v = v[~np.isnan(v)]
    return (float(v.mean()) if v.size else math.nan, float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size))


def paired_differences(entries: list[dict]) -> dict[str, dict[str, tuple[float, float, int, int]]]:
    """arm -> metric -> (mean, sample std, seeds, seeds with arm > masks_only) of the arm's metric minus masks-only's
    on the same seed: the seed's mask CTs are shared, so the pairing removes their luck from the comparison."""
    base = {e["seed"]: e for e in entries if e["arm"] == "masks_only"}
    out: dict[str, dict[str, tuple[float, float, int, int]]] = {}
    for arm in (a for a in ARMS if a != "masks_only"):
        rows = [e for e in entries if e["arm"] == arm and e["seed"] in base]
        if not rows:
            continue
        out[arm] = {}
        for k in METRIC_KEYS:
            d = [r[k] - base[r["seed"]][k] for r in rows]
            out[arm][k] = (*_mean_std(d), sum(x > 0 for x in d))
    return out


def _fmt(mean_std: tuple[float, float, int], signed: bool = False) -> str:
    m, s, n = mean_std
    mean = f"{m:+.3f}" if signed else f"{m:.3f}"
    return "–" if math.isnan(m) else (f"{mean} ± {s:.3f}" if n > 1 else mean)


def plot_results(entries: list[dict], path: Path) -> Path:
    """Bars (mean ± std over seeds) with one dot per seed, per metric and arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(entries)
    arms = [a for a in ARMS if a in summary]
    fig, axes = plt.subplots(2, 1, figsize=(10, 6.5), sharey=True)
    width = 0.8 / max(1, len(arms))
    for ax, suffix, title in ((axes[0], "", "all test CTs"), (axes[1], "_small", "tumour-free + largest tumour < 20 mm")):
        keys = [k + suffix for k in (*DETECTION_KEYS, "dice")]
        for j, arm in enumerate(arms):
            x = np.arange(len(keys)) + (j - (len(arms) - 1) / 2) * width
            means = [summary[arm][k][0] for k in keys]
            stds = [summary[arm][k][1] for k in keys]
            ax.bar(x, means, width, yerr=stds, capsize=3, label=arm, alpha=0.8)
            for xi, k in zip(x, keys):
                vals = [e[k] for e in entries if e["arm"] == arm and not math.isnan(e[k])]
                ax.plot([xi] * len(vals), vals, "k.", ms=4)
        ax.set_xticks(np.arange(len(keys)), [k.removesuffix("_small") for k in keys])
        ax.set(ylim=(0, 1.05), title=title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle("Per-CT detection and tumour Dice by arm (mean ± std over seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def results_markdown(entries: list[dict], meta: dict, plot_name: str) -> str:
    """results.md: summary table (mean ± std), per-seed rows, timings, settings."""
    summary = summarise(entries)
    lines = [f"# Report supervision on phantoms: results ({meta.get('scale', '?')} scale)", "",
             "Generated by `benchmarks/bench_science.py` (`make bench-science`); see docs/science.md for the protocol.",
             "", f"![comparison]({plot_name})", "",
             "## Mean ± std over seeds", "",
             "| arm | seeds | F1 | sensitivity | specificity | AUROC | tumour Dice |",
             "|---|---|---|---|---|---|---|"]
    for suffix, label in (("", "all"), ("_small", "< 20 mm")):
        for arm, s in summary.items():
            lines.append(f"| {arm} ({label}) | {s['f1' + suffix][2]} | "
                         + " | ".join(_fmt(s[k + suffix]) for k in (*DETECTION_KEYS, "dice")) + " |")
    differences = paired_differences(entries)
    if differences:
        lines += ["", "## Difference from masks_only on the same seed (mean ± std; seeds where higher / seeds)", "",
                  "| arm | F1 | AUROC | tumour Dice | F1 <20 mm | AUROC <20 mm | Dice <20 mm |", "|---" * 7 + "|"]
        for arm, d in differences.items():
            lines.append(f"| {arm} | " + " | ".join(
                f"{_fmt(d[k][:3], signed=True)} ({d[k][3]}/{d[k][2]})"
                for k in ("f1", "auroc", "dice", "f1_small", "auroc_small", "dice_small")) + " |")
    lines += ["", "## Per seed", "",
              "| arm | seed | F1 | sens | spec | AUROC | Dice | F1 <20 | sens <20 | spec <20 | AUROC <20 | Dice <20 "
              "| report CTs | train s | eval s |", "|---" * 15 + "|"]
    for e in sorted(entries, key=lambda e: (ARMS.index(e["arm"]), e["seed"])):
        vals = " | ".join("–" if math.isnan(e[k]) else f"{e[k]:.3f}" for k in METRIC_KEYS)
        lines.append(f"| {e['arm']} | {e['seed']} | {vals} | {e['report_cases']} | {e['train_seconds']:.0f} "
                     f"| {e['eval_seconds']:.0f} |")
    lines += ["", "## Setting", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    return "\n".join(lines) + "\n"


def write_report(results: Path, entries: list[dict], meta: dict) -> None:
    plot = results.with_name(results.stem + ".png")
    if entries:
        plot_results(entries, plot)
    md = results.with_name(results.stem + ".md")
    md.write_text(results_markdown(entries, meta, plot.name), encoding="utf-8")


# --------------------------------------------------------------------------------------------- main


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
    p.add_argument("--progress", action="store_true", help="show the training progress bars")
    args = p.parse_args(argv)
    import yaml

    raw: dict[str, Any] = {"scale": args.scale, **PRESETS[args.scale]}
    for text in args.overrides:
        key, _, value = text.partition("=")
        raw[key.strip()] = yaml.safe_load(value)
    for key in ("seeds", "arms", "work_dir", "results"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    raw["train_overrides"] = list(raw.get("train_overrides", [])) + args.train_set
    return ScienceSettings.model_validate(raw), args


def run_dir_of(settings: ScienceSettings, arm: str, seed: int, fingerprint: str) -> tuple[Path, str]:
    """The run directory ``runs/<arm>_seed<seed>_<run fingerprint>`` and the run fingerprint of one (arm, seed).

    Keyed by the fingerprint, so a run with other settings never resumes this one's checkpoint.
    """
    mask_ids = None if arm == "masks_all" else seed_mask_ids(settings, seed)
    run_fp = run_fingerprint(fingerprint, arm_config(settings, arm, seed, Path("unused")), mask_ids)
    return settings.work_dir / "runs" / f"{arm}_seed{seed}_{run_fp}", run_fp


def seed_mask_ids(settings: ScienceSettings, seed: int) -> set[str]:
    """The pool CTs that keep their masks in every arm of ``seed`` but ``masks_all``."""
    return mask_case_ids(pool_tumour_organs(settings.work_dir / "pool"), settings.mask_cases, seed)


def run_one(settings: ScienceSettings, arm: str, seed: int, fingerprint: str) -> dict:
    """Train, predict and score one (arm, seed); writes and returns its run directory's ``result.json``.

    Runs in a worker process when ``jobs`` > 1, so it reads everything it needs from disk.
    """
    import torch

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    run_dir, run_fp = run_dir_of(settings, arm, seed, fingerprint)
    pool, test = settings.work_dir / "pool", settings.work_dir / "test"
    base = pool_cases(pool)
    records: dict = {}
    if arm == "masks_reports_truth":
        records = _truth_records(pool)
    elif arm == "masks_reports_extracted":
        records = load_extracted_records(settings, [c.report_id for c in base])
    mask_ids = seed_mask_ids(settings, seed)
    cases, dropped = arm_cases(arm, base, mask_ids, records)
    config = arm_config(settings, arm, seed, run_dir / "train")
    checkpoint, train_s = train_arm(config, cases)
    train_s = record_train_seconds(run_dir, train_s)
    metrics, eval_s = evaluate_run(settings, checkpoint, test, run_dir)
    entry = {"arm": arm, "seed": seed, **metrics, "scale": settings.scale,
             "mask_cases": sum(c.has_mask for c in cases), "report_cases": sum(not c.has_mask for c in cases),
             "report_cases_without_record": dropped, "steps": config.optim.total_steps,
             "threshold_mm3": settings.threshold_mm3, "train_seconds": round(train_s, 1),
             "eval_seconds": round(eval_s, 1), "fingerprint": run_fp}
    (run_dir / "result.json").write_text(json.dumps(entry, indent=1))
    return entry


def record_train_seconds(run_dir: Path, seconds: float) -> float:
    """Add one call's training seconds to the run's total (``timing.json``) and return the total, so a resumed or
    rescored run reports the time of its whole training."""
    path = run_dir / "timing.json"
    total = (json.loads(path.read_text())["train_seconds"] if path.is_file() else 0.0) + seconds
    path.write_text(json.dumps({"train_seconds": total}))
    return total


def forget_scores(settings: ScienceSettings, fingerprint: str) -> list[tuple[str, int]]:
    """Delete the predictions and scores of the selected finished runs (keeping checkpoints and training time), so
    the next pass predicts and scores them again with the current code. Returns the (arm, seed) pairs reset."""
    reset = []
    for entry in collect_entries(settings, fingerprint):
        if entry["arm"] not in settings.arms or entry["seed"] not in settings.seeds:
            continue
        run_dir = run_dir_of(settings, entry["arm"], entry["seed"], fingerprint)[0]
        timing = run_dir / "timing.json"
        if not timing.is_file():
            timing.write_text(json.dumps({"train_seconds": entry["train_seconds"]}))
        for name in ("predictions", "evaluate"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
        (run_dir / "result.json").unlink()
        reset.append((entry["arm"], entry["seed"]))
    return reset


def collect_entries(settings: ScienceSettings, fingerprint: str) -> list[dict]:
    """Every finished (arm, seed) result under ``work_dir/runs`` made with these settings (any seed)."""
    out = []
    for path in sorted((settings.work_dir / "runs").glob("*/result.json")):
        entry = json.loads(path.read_text())
        if entry.get("arm") in ARMS and path.parent == run_dir_of(settings, entry["arm"], entry["seed"],
                                                                  fingerprint)[0]:
            out.append(entry)
    return out


def _short(entry: dict) -> dict:
    return {"bench": "science", **{k: entry[k] for k in ("arm", "seed", *METRIC_KEYS, "train_seconds",
                                                         "eval_seconds")}}


def training_slots(settings: ScienceSettings, extraction_running: bool) -> int:
    """Runs to train at once: the LLM processes take cores too, so fewer while they run (never none)."""
    return max(1, settings.jobs - settings.extract_workers) if extraction_running else settings.jobs


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
    extract_summary = settings.work_dir / "extract" / "summary.json"
    if args.report_only:
        meta.update(stored_extraction_meta(settings))
        entries = collect_entries(settings, fingerprint)
        write_results(results, entries)
        write_report(results, entries, meta)
        return entries

    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    t_start = time.perf_counter()
    pool = ensure_pool(settings)
    test = ensure_test(settings)
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
        truth = _truth_records(pool)
        extracted = load_extracted_records(settings, list(truth))
        agreement = extraction_agreement(extracted, truth)
        meta["extraction_vs_truth"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in agreement.items()}
        extract_summary.write_text(json.dumps({"extraction_vs_truth": meta["extraction_vs_truth"]}))
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


def _truth_records(pool: Path) -> dict:
    from train.data.records import records_from_ground_truth

    return records_from_ground_truth(pool / "ground_truth.jsonl")


if __name__ == "__main__":
    main()
