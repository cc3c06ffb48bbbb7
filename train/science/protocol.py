"""The science benchmark's arms, settings and per-arm training setup (protocol in docs/science.md).

Three arms and one control, trained with the same network, schedule and mask crops per step (the report arms add
their report crops on top), then scored on one held-out phantom set:

* ``masks_only``: only the ``mask_cases`` CTs with voxel masks.
* ``masks_reports_extracted``: the same plus every other pool CT, supervised only by its report, the records coming
  from ``rsuper ingest`` + ``rsuper extract`` (embedded LLM) on the report text.
* ``masks_reports_truth``: the same as above with the phantom generator's ground-truth records, which separates
  extraction errors from loss behaviour.
* ``masks_all`` (control): every pool CT keeps its voxel mask, the supervision the report arms stand in for. Unless it
  beats ``masks_only``, the recipe cannot turn more tumour CTs into a better network, and no report loss can show.

Run directories are named by a fingerprint of the run's resolved training config (:func:`run_fingerprint`), so
changed settings start a new run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from train.evaluate import DETECTION_KEYS
from train.science.draws import mask_case_ids, pool_tumour_organs

# The presets name their training configs relative to the checkout (configs/science/).
REPO = Path(__file__).resolve().parents[2]
ARMS = ("masks_only", "masks_reports_extracted", "masks_reports_truth", "masks_all")
MASK_ARMS = ("masks_only", "masks_all")  # no report crops: every crop of a step is a mask crop
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
    al_k: int = Field(4, ge=1, description="Active learning (`--protocol active`): CTs given their masks per round.")
    al_steps: int = Field(300, ge=2, description="Active learning: steps of each retrain from the base weights.")
    al_error_fraction: float = Field(0.1, gt=0, le=1, description="Active learning: share of the audited CTs whose "
                                     "records get one injected error (the audit's precision@k).")
    no_mask_organ: str | None = Field(
        None, description="`--protocol no_mask`: the tumour organ that has no voxel mask in any pool CT. Its lesions "
        "are left unannotated in the mask CTs (neither tumour nor background), so only reports can teach its "
        "channel; masks_all keeps them. None: every organ keeps its masks.")
    no_mask_report_overrides: list[str] = Field(
        default_factory=lambda: ["loss.report_early_channels=[{held_out_channel}]",
                                 "loss.ball_bce_normalization_early=class"],
        description="`--protocol no_mask`: the report arms' recipe on top of `train_config` (before "
        "`train_overrides`, which win); `{held_out_channel}` stands for the held-out organ's lesion channel. "
        "With no voxel example the crop-normalised Ball BCE starves that channel of positives and the mask-first "
        "stage leaves it untrained for 900 steps, so it gets class-balanced Ball BCE and its report losses from "
        "step 0; the channels the masks teach keep the mixed recipe (docs/science.md).")
    no_mask_organs: list[str] = Field(
        default_factory=lambda: ["pancreas", "kidney", "liver"],
        description="`--protocol no_mask`: the organs held out in turn (one benchmark per organ).")


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
    # Active learning (`--protocol active`) on one niced core in about an hour for three seeds: a smaller pool and
    # test set, smaller phantoms, and far fewer steps than "cpu" (docs/science.md, "Active learning").
    "al_cpu": dict(train_config="configs/science/cpu.yaml", work_dir="runs/science/al_cpu",
                   results="benchmarks/science/results_al_cpu.json", pool_cases=30, mask_cases=6, test_cases=20,
                   phantom_shape=(64, 64, 48), pool_tumor_count_probabilities=(0.1, 0.4, 0.3, 0.2),
                   train_overrides=["optim.total_steps=700", "optim.report_start_step=300",
                                    "optim.report_ramp_steps=100"],
                   al_k=4, al_steps=250, official_evaluate=False),
    # Full scale (a GPU): bigger pool and test set, finer phantoms, a wider network trained longer.
    "gpu": dict(train_config="configs/science/gpu.yaml", work_dir="runs/science/gpu",
                results="benchmarks/science/results_gpu.json", pool_cases=200, mask_cases=10, test_cases=60,
                phantom_shape=(128, 128, 96), extract_workers=1, predict_overlap=0.5, torch_threads=None,
                pool_tumor_count_probabilities=(0.1, 0.4, 0.3, 0.2)),
}


def training_slots(settings: ScienceSettings, extraction_running: bool) -> int:
    """Runs to train at once: the LLM processes take cores too, so fewer while they run (never none)."""
    return max(1, settings.jobs - settings.extract_workers) if extraction_running else settings.jobs


# --------------------------------------------------------------------------------------------- training data


@dataclasses.dataclass(frozen=True)
class PoolCase:
    """A pool CT before the arm decides its supervision."""

    files: Any
    report_id: str


def pool_cases(pool: Path) -> list[PoolCase]:
    """Every CT of a phantom set with its files (lesion mask included) and report id."""
    from train.data.cases import build_cases, discover, training_cases

    build = build_cases(pool, pool / "case_reports.csv", check_values=False)
    if build.problems:
        raise RuntimeError(f"{pool}: {build.problems[:3]}")
    layout = discover(pool)
    cases = training_cases(build.table, {}, layout.organ_label_names, layout.lesion_label_names, split=None)
    report_of = dict(zip(build.table.column("ct_id").to_pylist(), build.table.column("report_id").to_pylist()))
    return [PoolCase(c.files, report_of[c.files.ct_id]) for c in cases]


def arm_cases(arm: str, base_cases: list, mask_ids: set[str], records: dict,
              unannotated_organ: str | None = None) -> tuple[list, int]:
    """Training cases of one arm and the number of report CTs left out (no record).

    Args:
        arm: one of :data:`ARMS`.
        base_cases: TrainingCase per pool CT with its lesion mask and no records.
        mask_ids: CTs that keep their masks (``masks_all``: every CT keeps it).
        records: report_id -> CaseRecords for the report arms (truth or extracted).
        unannotated_organ: the no-mask organ, whose lesions the mask CTs of every arm but ``masks_all`` lose; in
            the report arms those CTs keep their records, which supervise that organ's lesion channel.
    """
    from train.data.cases import TrainingCase

    out, dropped = [], 0
    for case in base_cases:
        if arm == "masks_all":
            out.append(TrainingCase(case.files, None))
        elif case.files.ct_id in mask_ids:
            if unannotated_organ is None:
                out.append(TrainingCase(case.files, None))
                continue
            # The report arms' mask CTs keep their reports: they supervise the organ the masks leave out.
            rec = records.get(case.report_id) if arm not in MASK_ARMS else None
            out.append(TrainingCase(unannotate_lesions(case.files, unannotated_organ), rec))
        elif arm not in MASK_ARMS:
            rec = records.get(case.report_id)
            if rec is None:
                dropped += 1
                continue
            out.append(TrainingCase(dataclasses.replace(case.files, lesion_mask_path=None), rec))
    return out, dropped


def unannotate_lesions(files: Any, organ: str) -> Any:
    """The case files with ``organ``'s lesion label renamed to background in the lesion-name table.

    The cache then maps those voxels to no lesion and leaves ``organ`` out of the mask's annotated lesion organs,
    so a mask crop trains that lesion channel on nothing (neither tumour nor background), as if the dataset had
    never annotated that tumour type. Other organs' lesions keep their labels.
    """
    from schemas.label_aliases import BACKGROUND

    names = files.lesion_label_names
    if not names or f"{organ}_lesion" not in names.values():
        raise ValueError(f"{files.ct_id}: its lesion label names {names} have no {organ}_lesion to leave out")
    renamed = {value: BACKGROUND if name == f"{organ}_lesion" else name for value, name in names.items()}
    return dataclasses.replace(files, lesion_label_names=renamed)


def arm_config(settings: ScienceSettings, arm: str, seed: int, out_dir: Path):
    """The TrainConfig of one (arm, seed): the YAML plus overrides.

    The report arms add report crops to the mask crops of each step; masks-only and masks-all batches hold just
    those mask crops (``mask_fraction x batch_size`` of them, which must be whole), so every arm sees as many mask
    crops per step. Taking the report crops out of a fixed batch instead costs the masks a quarter of their crops,
    which alone moved the masks-only AUROC from 0.77 to 0.48 (docs/science.md).
    """
    from train.config import load_config

    path = REPO / settings.train_config if not settings.train_config.is_absolute() else settings.train_config
    no_mask = settings.no_mask_report_overrides if settings.no_mask_organ and arm not in MASK_ARMS else []
    if any("{held_out_channel}" in o for o in no_mask):
        classes = load_config(path, list(settings.train_overrides)).data.classes
        channel = classes.index(f"{settings.no_mask_organ}_lesion")
        no_mask = [o.replace("{held_out_channel}", str(channel)) for o in no_mask]
    overrides = [*no_mask, *settings.train_overrides, f"output_dir={out_dir}", f"seed={seed}",
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


def seed_mask_ids(settings: ScienceSettings, seed: int) -> set[str]:
    """The pool CTs that keep their masks in every arm of ``seed`` but ``masks_all``.

    With a no-mask organ, the draw covers the other tumour organs only (that organ's tumours are unannotated).
    """
    organs = pool_tumour_organs(settings.work_dir / "pool")
    if settings.no_mask_organ is not None:
        organs = {ct: found - {settings.no_mask_organ} for ct, found in organs.items()}
    return mask_case_ids(organs, settings.mask_cases, seed)


# --------------------------------------------------------------------------------------------- fingerprints


def settings_fingerprint(settings: ScienceSettings) -> str:
    """sha256 (12 hex) of the benchmark settings that decide a result (data, thresholds; not paths, seeds, arms or
    worker counts). The training recipe is covered per run by :func:`run_fingerprint`."""
    keep = settings.model_dump(mode="json", exclude={"work_dir", "results", "seeds", "arms", "extract_workers",
                                                     "extract_threads", "official_evaluate", "torch_threads",
                                                     "jobs", "scale", "train_config", "train_overrides", "al_k",
                                                     "al_steps", "al_error_fraction", "no_mask_organ",
                                                     "no_mask_organs", "no_mask_report_overrides"})
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


# Loss fields that only act through the report losses: with report_weight 0 they cannot change a run.
_REPORT_LOSS_PREFIXES = ("ball_", "volume_", "attenuation_", "presence_", "count_prior_", "group_margin_")
# Fields added after runs were made: left out at their default, so those runs keep their fingerprints.
_ADDED_AT_DEFAULT = {"loss": {"report_early_channels": [], "report_late_factor": 1.0,
                              "ball_bce_normalization_early": None}}


def run_fingerprint(fingerprint: str, config: Any, mask_ids: set[str] | None = None,
                    no_mask_organ: str | None = None) -> str:
    """sha256 (12 hex) of the settings fingerprint, one run's resolved TrainConfig (defaults included), the
    CTs that keep their masks (``None`` where every CT keeps it) and the organ whose lesions they lose.

    Paths are left out (work directories may differ); so are the report-loss fields and the report schedule of a
    run whose report weight is 0, so changing them does not retrain the mask arms. Code is not covered.
    """
    dump = config.model_dump(mode="json", exclude={"output_dir": True, "data": {"root", "cache_dir"}})
    for section, fields in _ADDED_AT_DEFAULT.items():
        for name, default in fields.items():
            if dump[section].get(name) == default:
                del dump[section][name]
    if dump["loss"]["report_weight"] == 0:
        dump["loss"] = {k: v for k, v in dump["loss"].items() if not k.startswith(_REPORT_LOSS_PREFIXES)}
        dump["optim"] = {k: v for k, v in dump["optim"].items() if not k.startswith("report_")}
    if mask_ids is not None:
        dump["mask_ct_ids"] = sorted(mask_ids)
    if no_mask_organ is not None:
        dump["no_mask_organ"] = no_mask_organ
        if dump["loss"]["report_weight"] != 0:
            dump["mask_ct_records"] = True  # their reports supervise the held-out organ (before: nothing did)
    return hashlib.sha256((fingerprint + json.dumps(dump, sort_keys=True)).encode()).hexdigest()[:12]


def run_dir_of(settings: ScienceSettings, arm: str, seed: int, fingerprint: str) -> tuple[Path, str]:
    """The run directory ``runs/<arm>_seed<seed>_<run fingerprint>`` and the run fingerprint of one (arm, seed).

    Keyed by the fingerprint, so a run with other settings never resumes this one's checkpoint.
    """
    mask_ids = None if arm == "masks_all" else seed_mask_ids(settings, seed)
    no_mask_organ = None if arm == "masks_all" else settings.no_mask_organ
    run_fp = run_fingerprint(fingerprint, arm_config(settings, arm, seed, Path("unused")), mask_ids, no_mask_organ)
    return settings.work_dir / "runs" / f"{arm}_seed{seed}_{run_fp}", run_fp
