"""Training configuration: one pydantic model per concern, loaded from YAML, overridable from the command line.

A YAML file mirrors :class:`TrainConfig`::

    output_dir: runs/demo
    data: {source: phantoms, root: data/phantoms, patch_size: [48, 48, 32]}
    model: {name: dynunet, filters: [16, 32, 64, 128]}
    optim: {lr: 1.0e-3, total_steps: 600}
    loss: {report_weight: 0.1}

Command-line overrides use the same dotted field names (``--set optim.lr=1e-4``); values are parsed as YAML
scalars / lists and validated by the same models, so there is exactly one definition of every option.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from extract.cli_errors import yaml_problem
from train.data.config import PatchDatasetConfig
from train.losses.config import LossConfig


ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DataConfig(PatchDatasetConfig):
    """Where the training cases and report records come from; the sampling fields are the data pipeline's
    (:class:`train.data.config.PatchDatasetConfig`: classes, patch_size, mask_fraction, normalisation, ...)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    source: Literal["phantoms", "cases", "synthetic"] = Field(
        "phantoms",
        description="phantoms: the phantom set under `root` (generated when missing); cases: the `cases` table "
        "of the store `db` (`rsuper cases`: CT <-> report mapping and splits), or while the store has none the "
        "cases found under `root`; synthetic: random balls in memory (tests and benchmarks only).",
    )
    root: Path = Field(
        Path("data/phantoms"),
        description="Phantom folder (source: phantoms), or the dataset root given to `rsuper cases` (source: cases; "
        "its label-name files name the mask values).")
    phantom_count: int = Field(
        24, ge=2, description="Phantoms in the generated set (made when `root` has none, or again when the "
        "settings recorded in its phantoms.json differ).")
    phantom_seed: int = Field(0, description="Seed of the generated phantom set.")
    phantom_shape: tuple[PositiveInt, PositiveInt, PositiveInt] = Field(
        (96, 96, 64), description="Voxels of generated phantoms.")
    phantom_tumor_count_probabilities: tuple[float, ...] = Field(
        (0.25, 0.4, 0.2, 0.15), description="Probability of 0, 1, 2, 3 ... tumours per generated phantom.")
    records: Literal["store", "truth"] = Field(
        "truth",
        description="Report records used for supervision: store = extracted records in the DuckDB store "
        "(`db`); truth = the phantom generator's ground-truth report content (no extraction needed).",
    )
    db: Path | None = Field(None, description="DuckDB store (default: RSUPER_DB or data/rsuper.duckdb).")
    cache_dir: Path | None = Field(None, description="Preprocessed-volume cache (default: <root>/cache).")
    report_only_fraction: float = Field(
        0.5, ge=0, le=1,
        description="Share of training CTs that have masks but train from their report only (mask hidden).",
    )
    batch_size: int = Field(2, ge=1, description="Crops per step and per process (global = this x world size).")
    val_fraction: float = Field(
        0.2, gt=0, lt=1,
        description="Share of cases held out for validation (cases found here; a store `cases` table has its splits).")
    max_val_cases: int = Field(
        4, ge=1,
        description="Validation cases evaluated at each validation: the held-out mask-annotated cases with the most "
        "lesion voxels (a lesion-free or 2-voxel-lesion case says little about a short run).",
    )
    val_crop_margin_mm: float | None = Field(
        None, ge=0,
        description="Crop each validation volume to the box around its labelled organs grown by this margin (mm); "
        "cheaper, and false positives far outside the organs are not scored. None: the whole volume.",
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per training process.")

    @property
    def lesion_channels(self) -> list[int]:
        """Indices of the `<organ>_lesion` output channels."""
        return [i for i, c in enumerate(self.classes) if c.endswith("_lesion")]


class ModelConfig(_Strict):
    """Which network (by registry name, see :mod:`train.model`) and its size."""

    name: str = Field(
        "dynunet",
        description="Registered network name (dynunet, segresnet) or `package.module:factory` for your own.",
    )
    filters: list[int] = Field(
        default_factory=lambda: [16, 32, 64, 128], description="Feature channels per resolution level."
    )
    deep_supervision_heads: int = Field(
        1, ge=0, description="Auxiliary lower-resolution output heads (upsampled to the input size)."
    )
    dropout: float = Field(0.0, ge=0, lt=1)
    output_bias: float | None = Field(
        None,
        description="Initial bias of every output head (logit): -3 starts each channel at sigmoid(-3) = 0.05, a "
        "background prior, so short runs do not spend their first hundred steps pushing every voxel down from "
        "0.5. None: the framework's default initialisation.",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments of the factory.")


class OptimConfig(_Strict):
    """AdamW with linear warm-up then polynomial decay, gradient clipping, EMA and mixed precision."""

    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    total_steps: int = Field(600, ge=1, description="Optimizer steps of the whole run (the schedule's length).")
    warmup_steps: int = Field(50, ge=0, description="Linear warm-up from 0 to `lr`.")
    poly_power: float = Field(0.9, gt=0, description="Exponent of the (1 - progress)^p decay after warm-up.")
    grad_clip_norm: float | None = Field(1.0, gt=0, description="Clip the global gradient norm; None: off.")
    ema_decay: float | None = Field(
        0.99, gt=0, lt=1, description="EMA of the weights (used for validation and `best`); None: off."
    )
    amp: Literal["auto", "bf16", "off"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 on CPU; bf16: always autocast; off: fp32."
    )
    report_start_step: int = Field(
        0, ge=0,
        description="Steps trained on the segmentation loss alone before the report losses switch on. The Ball "
        "Loss places its pseudo-mask where the network is already most confident, so from a random start it "
        "reinforces arbitrary tissue; the paper starts from a masks-only model for the same reason.",
    )
    report_ramp_steps: int = Field(
        0, ge=0, description="Linear ramp of the report-loss weight from 0 to `loss.report_weight` after the start."
    )

    @model_validator(mode="after")
    def _check(self) -> OptimConfig:
        if self.warmup_steps >= self.total_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below total_steps ({self.total_steps})")
        return self


class ValidationConfig(_Strict):
    """When and how the model is validated and checkpointed."""

    every_steps: int = Field(100, ge=1, description="Validate (and maybe save `best`) every N steps.")
    checkpoint_every_steps: int = Field(50, ge=1, description="Save `latest` every N steps.")
    metric: str = Field("dice_lesion", description="Metric that picks `best` (higher is better).")
    overlap: float = Field(0.5, ge=0, lt=1, description="Sliding-window overlap.")
    png_cases: int = Field(2, ge=0, description="Validation cases drawn in the PNG.")
    sw_batch_size: int = Field(4, ge=1, description="Sliding windows per forward pass.")


class TrainConfig(_Strict):
    """Everything one `rsuper train` run needs."""

    output_dir: Path = Field(Path("runs/demo"), description="Checkpoints, logs and plots go here.")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: int | None = Field(
        None, ge=1,
        description="torch intra-op CPU threads per process; None: torch's default (one per core). Small networks "
        "gain little from more threads, and on a busy machine extra threads make every step several times slower.",
    )
    dist_timeout_s: float | None = Field(
        None, gt=0,
        description="Under torchrun: seconds a collective (gradient all-reduce, barrier, the data-preparation turns) "
        "waits for the other ranks before failing; None: torch's default (30 min gloo, 10 min NCCL). A rank that "
        "dies is noticed at once; this bounds the wait for one that hangs or whose machine drops off the network.",
    )
    init_from: Path | None = Field(
        None,
        description="Checkpoint whose weights initialise the network (stage 2 of the two-stage recipe); "
        "ignored when resuming.",
    )
    log_every_steps: int = Field(10, ge=1)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)

    @model_validator(mode="after")
    def _lesion_channels(self) -> TrainConfig:
        # The losses must know the lesion channels; derive them from the class list unless given.
        if not self.loss.lesion_channels:
            object.__setattr__(
                self, "loss", self.loss.model_copy(update={"lesion_channels": self.data.lesion_channels})
            )
        elif self.loss.lesion_channels != self.data.lesion_channels:
            raise ValueError(
                f"loss.lesion_channels {self.loss.lesion_channels} disagree with the `_lesion` classes of "
                f"data.classes {self.data.lesion_channels}"
            )
        stray = sorted(set(self.loss.report_early_channels) - set(self.data.lesion_channels))
        if stray:
            raise ValueError(f"loss.report_early_channels {stray} are not `_lesion` classes of data.classes "
                             f"(channels {self.data.lesion_channels})")
        return self

    def fingerprint(self) -> str:
        """sha256 (16 hex) of the settings that define the training problem (not paths, threads, logging or
        validation)."""
        fields = self.model_dump(
            mode="json",
            exclude={"output_dir": True, "device": True, "cpu_threads": True, "dist_timeout_s": True,
                     "log_every_steps": True,
                     "validation": True, "init_from": True,
                     "data": {"num_workers", "db", "root", "cache_dir", "max_val_cases", "val_crop_margin_mm"}},
        )
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a", "b", "c"], parsed YAML value).

    Raises:
        ConfigError: no ``=`` or an empty key.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. optim.lr=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({yaml_problem(exc)})") from exc
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the raw config mapping with dotted overrides applied (validation happens later)."""
    out = json.loads(json.dumps(raw, default=str))
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
        node[path[-1]] = value
    return out


def load_model_config(model: type[ModelT], path: str | Path | None, overrides: list[str] | None = None) -> ModelT:
    """Read a YAML config into `model` (its defaults when ``path`` is None) and apply dotted ``overrides``.

    Raises:
        ConfigError: unreadable YAML or invalid fields, naming the file and the field path.
    """
    raw = read_yaml_mapping(path) if path is not None else {}
    return validate_config(model, apply_overrides(raw, overrides or []), str(path) if path is not None else "defaults")


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds (empty file: {}).

    Raises:
        ConfigError: unreadable file, invalid YAML (line and column), or a top level that is not a mapping.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"{path}: cannot read config ({reason})") from exc
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({yaml_problem(exc)})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of settings (key: value)")
    return raw


def validate_config(model: type[ModelT], raw: dict[str, Any], source: str) -> ModelT:
    """`model` validated from `raw`; every problem in one line, `<source>: <field.path>: <problem>; ...`.

    Raises:
        ConfigError: unknown or invalid fields.
    """
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
                             for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from exc


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """The training config from YAML and overrides (`load_model_config`)."""
    return load_model_config(TrainConfig, path, overrides)


def save_config(config: TrainConfig, path: Path) -> None:
    """Write the resolved config as YAML (what the run really used)."""
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
