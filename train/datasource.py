"""Training data for `rsuper train` from a folder of cases (the phantom set or your own), wired to the trainer.

The heavy lifting lives in :mod:`train.data` (cases table, cache, patch sampling, collate); this module only
chooses the cases and records, splits train / validation, and produces step-indexed batches: batch ``s`` of rank
``r`` depends only on (seed, r, s), so a resumed run reads exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from train.config import DataConfig
from train.data.volume import VolumeCase

log = logging.getLogger("rsuper.train")


def ensure_phantoms(config: DataConfig) -> Path:
    """Generate the phantom set under ``config.root`` unless it is already there; returns the root.

    A set whose recorded generator settings (``phantoms.json``) differ from ``data.phantom_count`` /
    ``phantom_seed`` / ``phantom_shape`` / ``phantom_tumor_count_probabilities`` is generated again, so changing
    the config never trains on a stale set.
    """
    import shutil

    from train.data.phantoms import SET_CONFIG_FILE, PhantomConfig, read_set_config, write_phantom_set

    root = Path(config.root)
    wanted = PhantomConfig(n=config.phantom_count, seed=config.phantom_seed, shape=config.phantom_shape,
                           tumor_count_probabilities=config.phantom_tumor_count_probabilities)
    settings = lambda c: (c.n, c.seed, c.shape, c.tumor_count_probabilities)  # noqa: E731 (what DataConfig sets)
    if (root / "ground_truth.jsonl").is_file() and (root / "case_reports.csv").is_file():
        recorded = read_set_config(root)
        if recorded is None:  # an older set or a hand-made subset: its settings are unknown, so it is kept
            n = sum(1 for line in (root / "ground_truth.jsonl").open() if line.strip())
            if n != wanted.n:
                log.warning("%s holds %d phantoms without recorded settings and the config asks for %d: using them "
                            "as they are (delete the folder to generate the configured set)", root, n, wanted.n)
            return root
        if settings(recorded) == settings(wanted):
            return root
        log.warning("%s holds phantoms generated with (count, seed, shape, tumour-count probabilities) = %s but the "
                    "config asks for %s: generating them again", root, settings(recorded), settings(wanted))
        (root / SET_CONFIG_FILE).unlink()
        shutil.rmtree(root / "cases", ignore_errors=True)  # no case folder of the old set may stay discoverable
    log.info("generating %d phantoms in %s", config.phantom_count, root)
    write_phantom_set(root, wanted, progress=True)
    return root


def load_records(config: DataConfig, root: Path, report_ids: list[str]) -> dict:
    """report_id -> CaseRecords from the store (extracted) or from the phantom ground truth."""
    from train.data.records import load_case_records, records_from_ground_truth

    if config.records == "truth":
        path = root / "ground_truth.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: `data.records: truth` needs the phantom ground truth file")
        return records_from_ground_truth(path)
    from extract.store import Store

    with Store(config.db, read_only=True) as store:
        return load_case_records(store, report_ids)


def load_cases(config: DataConfig, root: Path):
    """The `cases` rows to train on (pyarrow, :data:`train.data.cases.CASES_SCHEMA`).

    ``source: cases`` reads the store's `cases` table when it holds rows: `rsuper cases` wrote there the checked
    cases, the CT -> report mapping of its ``--map`` file and the splits (a CSV ``split`` column, or its val / test
    fractions). Otherwise (phantoms, or no table yet) the cases are found and joined under ``root`` here.
    """
    from train.data.cases import build_cases, read_cases

    if config.source == "cases":
        from extract.store import Store, default_db_path

        db = Path(config.db) if config.db is not None else default_db_path()
        if db.is_file():
            with Store(db, read_only=True) as store:
                table = read_cases(store)
            if table.num_rows:
                log.info("%d cases from the `cases` table of %s", table.num_rows, db)
                return table
        if not root.is_dir():  # one error naming both places, not a warning and then the error
            raise FileNotFoundError(f"{root}: no such folder (data.root), and {db} has no `cases` table: run "
                                    "`rsuper cases ROOT` first, or set data.root to the dataset folder")
        log.warning("%s: no `cases` table (run `rsuper cases`); finding the cases under %s", db, root)
    mapping = root / "case_reports.csv"
    build = build_cases(root, mapping if mapping.is_file() else None, val_fraction=config.val_fraction,
                        check_values=False)
    for p in build.problems:
        log.warning("case %s: %s: %s", p.ct_id, p.field, p.message)
    return build.table


class _StepBatches(torch.utils.data.Sampler):
    """Index lists ``[(case_index, sample_seed), ...]`` for steps start, start + 1, ... of one rank."""

    def __init__(self, cases, batch_size: int, mask_fraction: float, seed: int, rank: int, start_step: int):
        self.cases, self.batch_size, self.mask_fraction = cases, batch_size, mask_fraction
        self.seed, self.rank, self.start_step = seed, rank, start_step

    def __iter__(self):
        from train.data.batching import MixedBatchSampler

        step = self.start_step
        while True:
            step_seed = int(np.random.SeedSequence([self.seed, self.rank, step]).generate_state(1)[0])
            sampler = MixedBatchSampler(self.cases, self.batch_size, 1, self.mask_fraction, seed=step_seed)
            yield next(iter(sampler))
            step += 1


def canonical(value) -> str:
    """A process-independent JSON text of records (dataclasses, tuples, sets): sets are sorted, since their
    iteration order changes with Python's per-process string hashing."""
    import dataclasses

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (set, frozenset)):
            return sorted(plain(x) for x in v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return json.dumps(plain(value), sort_keys=True)


def cases_fingerprint(cases: list) -> str:
    """sha256 (16 hex) of the training cases: ids, content hashes, mask flags and :func:`canonical` records, so
    the same data gives the same fingerprint in every process (``repr`` of a set would not)."""
    digest = hashlib.sha256()
    for c in cases:
        digest.update(f"{c.files.ct_id}:{c.files.content_sha256}:{c.has_mask}:{canonical(c.records)}\n".encode())
    return digest.hexdigest()[:16]


def rank_validation_cases(cases: list, cache_dir: Path, config: DataConfig) -> list:
    """Held-out cases ordered by lesion voxel count, largest first (ties by ct_id), so that the few validated
    at each validation hold lesions a network can segment."""
    from train.data.cache import ensure_cached

    def lesion_voxels(case) -> int:
        cached = ensure_cached(cache_dir, case.files, config.preprocess)
        return int(np.count_nonzero(cached.lesions)) if cached.lesions is not None else 0

    counts = {c.files.ct_id: lesion_voxels(c) for c in cases}
    return sorted(cases, key=lambda c: (-counts[c.files.ct_id], c.files.ct_id))


def organ_box(label_boxes: dict[str, list[list[int]]], shape, spacing_mm, margin_mm: float,
              min_size) -> tuple[slice, slice, slice]:
    """Voxel slices of the box around every labelled structure, grown by ``margin_mm`` and to at least
    ``min_size`` voxels per axis (centred, clipped to the volume). The whole volume when nothing is labelled."""
    if not label_boxes:
        return tuple(slice(0, n) for n in shape)
    lo = np.min([b[0] for b in label_boxes.values()], axis=0)
    hi = np.max([b[1] for b in label_boxes.values()], axis=0) + 1
    grow = np.ceil(margin_mm / np.asarray(spacing_mm, float)).astype(int)
    lo, hi = lo - grow, hi + grow
    short = np.maximum(np.asarray(min_size) - (hi - lo), 0)
    lo, hi = lo - short // 2, hi + short - short // 2
    shape = np.asarray(shape)
    shift = np.maximum(-lo, 0) - np.maximum(hi - shape, 0)  # slide back inside before clipping
    lo, hi = np.clip(lo + shift, 0, shape), np.clip(hi + shift, 0, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


class CaseData:
    """Cases under a root folder, split into training and validation by the cases table's split column."""

    def __init__(self, config: DataConfig, train_cases: list, val_cases: list, cache_dir: Path, fingerprint: str):
        from train.data.dataset import CaseDataset

        if not train_cases:
            raise ValueError(f"{config.root}: no training case (check the split and the records)")
        self.config = config
        self.classes = list(config.classes)
        self.in_channels = 1
        self.cache_dir = cache_dir
        self.train_cases = train_cases
        self._val_cases = rank_validation_cases(val_cases, cache_dir, config)[: config.max_val_cases]
        self._fingerprint = fingerprint
        self.dataset = CaseDataset(train_cases, cache_dir, config)

    @classmethod
    def from_config(cls, config: DataConfig, seed: int = 0) -> CaseData:
        from train.data.cases import discover, training_cases

        root = ensure_phantoms(config) if config.source == "phantoms" else Path(config.root)
        table = load_cases(config, root)
        layout = discover(root)
        report_ids = [r for r in table.column("report_id").to_pylist() if r is not None]
        records = load_records(config, root, report_ids)
        kw = dict(organ_label_names=layout.organ_label_names, lesion_label_names=layout.lesion_label_names)
        train = training_cases(table, records, split="train", report_only_fraction=config.report_only_fraction,
                               seed=seed, **kw)
        val = training_cases(table, records, split="val", report_only_fraction=0.0, seed=seed, **kw)
        val = [c for c in val if c.has_mask]
        cache_dir = Path(config.cache_dir) if config.cache_dir else root / "cache"
        data = cls(config, train, val, cache_dir, cases_fingerprint(train + val))
        log.info("training data: %s", data.describe())
        data.dataset.prepare(progress=False)
        return data

    def fingerprint(self) -> str:
        return self._fingerprint

    def train_batches(self, rank: int, world_size: int, seed: int, start_step: int = 0) -> Iterator[dict]:
        """Endless collated batches for ``rank`` (ranks draw from independent streams)."""
        from train.data.batching import collate

        sampler = _StepBatches(self.train_cases, self.config.batch_size, self.config.mask_fraction, seed, rank,
                               start_step)
        # A generator of its own: the iterator draws its workers' base seed from it when created, which from the
        # global one would shift the stream that dropout draws from, so a resumed run would differ from an
        # uninterrupted one.
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([seed, rank, start_step]).generate_state(1)[0]))
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=sampler, collate_fn=collate, num_workers=self.config.num_workers,
            persistent_workers=self.config.num_workers > 0, generator=generator,
        )
        return iter(loader)

    def _whole_volume_sample(self, case, shape) -> dict:
        """A sample covering the whole cached volume (start 0), no random choice left."""
        from train.data.dataset import build_sample
        from train.data.cache import ensure_cached

        cfg = self.config.model_copy(update={
            "patch_size": tuple(shape), "foreground_probability": 0.0, "random_crop_probability": 1.0,
        })
        cached = ensure_cached(self.cache_dir, case.files, self.config.preprocess)
        return build_sample(cached, case, cfg, np.random.default_rng(0))

    def val_cases(self, cases: list | None = None) -> list[VolumeCase]:
        """Whole validation volumes with their masks and the reported tumours (for the PNG).

        ``cases``: other mask-annotated :class:`TrainingCase` objects to load the same way (default: the
        validation cases), e.g. the training cases for a fit-versus-generalisation check.
        """
        import dataclasses

        from train.data.cache import ensure_cached
        from train.data.cases import TrainingCase

        out = []
        for case in self._val_cases if cases is None else cases:
            cached = ensure_cached(self.cache_dir, case.files, self.config.preprocess)
            shape = tuple(cached.meta["shape"])
            sample = self._whole_volume_sample(case, shape)
            box = tuple(slice(0, n) for n in shape)
            if self.config.val_crop_margin_mm is not None:
                box = organ_box(cached.meta["label_boxes"], shape, cached.spacing_mm, self.config.val_crop_margin_mm,
                                self.config.patch_size)
            tumors = []
            if case.records is not None:
                report_case = TrainingCase(dataclasses.replace(case.files, lesion_mask_path=None), case.records)
                for g in self._whole_volume_sample(report_case, shape)["groups"]:
                    for t in g["tumors"]:
                        if t.size_known:
                            tumors.append({"channel": g["channel"], "diameters_mm": list(t.diameters_mm),
                                           "group_mask": g["mask"][box]})
            affine = np.asarray(cached.meta["affine"], float).copy()
            affine[:3, 3] += affine[:3, :3] @ [b.start for b in box]  # the crop's first voxel
            crop = (slice(None), *box)
            out.append(VolumeCase(
                ct_id=case.files.ct_id,
                image=torch.from_numpy(np.ascontiguousarray(sample["image"][crop])),
                image_hu=torch.from_numpy(np.ascontiguousarray(sample["image_hu"][crop])),
                labels=torch.from_numpy(np.ascontiguousarray(sample["labels"][crop], dtype=np.float32)),
                affine=affine,
                reported_tumors=tumors,
            ))
        return out

    def describe(self) -> str:
        """The training cases by supervision: a lesion mask, report records only, or neither (never sampled: a
        CT without a report, or whose report has no current extraction), and the validation cases used."""
        n_mask = sum(c.has_mask for c in self.train_cases)
        n_report = sum(not c.has_mask and c.records is not None for c in self.train_cases)
        return json.dumps({"train_cases": len(self.train_cases), "train_with_masks": n_mask,
                           "train_report_only": n_report,
                           "train_unsupervised": len(self.train_cases) - n_mask - n_report,
                           "val_cases": len(self._val_cases)})
