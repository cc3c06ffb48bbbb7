"""The training loop: AdamW + warm-up/poly schedule, gradient clipping, EMA, bf16 autocast, DDP, resume.

Data sources implement :class:`train.factories.TrainingData`; batches are dicts with

* ``image``: float (B, in, D, H, W) network input; ``image_hu``: float (B, 1, D, H, W) Hounsfield units;
* ``labels``: float (B, C, D, H, W); ``unknown_mask``: bool (B, C, D, H, W) (1 = not supervised by the
  segmentation loss); ``has_mask``: bool (B,) CT has voxel annotations;
* ``targets``: :class:`train.losses.targets.ReportTargets`.

Batch ``s`` of rank ``r`` must depend only on (seed, r, s): then a resumed run sees the same data as an
uninterrupted one, and the restored optimizer / scheduler / RNG states make the loss curves match.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from train import checkpoint as ckpt_io
from train.config import TrainConfig, save_config
from train.distributed import DistInfo, RankDisagreement
from train.factories import TrainingData, build_loss
from train.inference import autocast_context, predict_probabilities
from train.losses.config import LossConfig
from train.model import build_network, check_patch_size

log = logging.getLogger("rsuper.train")


# --------------------------------------------------------------------------------------------- pure pieces


def lr_factor(step: int, warmup_steps: int, total_steps: int, power: float) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based): linear warm-up, then (1 - progress)^power."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 1.0 - progress) ** power


def report_weight_factor(step: int, start_step: int, ramp_steps: int) -> float:
    """Multiplier of the report-loss weight at optimizer step ``step`` (0-based): 0 before ``start_step``, then a
    linear ramp over ``ramp_steps`` steps to 1."""
    if step < start_step:
        return 0.0
    if ramp_steps <= 0:
        return 1.0
    return min(1.0, (step - start_step + 1) / ramp_steps)


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers.

    ``shadow = decay * shadow + (1 - decay) * weights`` after each optimizer step; integer buffers are copied.
    The effective decay is ``min(decay, (1 + n) / (10 + n))`` so early averages are not dominated by the
    random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)


# --------------------------------------------------------------------------------------------- trainer


class Trainer:
    """Owns the network, optimizer, schedule, EMA and checkpoints of one run.

    Args:
        config: resolved configuration.
        data: data source.
        dist: process group facts (:func:`train.distributed.setup_distributed`).
        loss_fn: module called as ``loss_fn(outputs, labels, unknown_mask, has_mask, targets, image_hu)`` and
            returning ``(total, components)``; default :func:`build_loss`.
        resume: continue from ``output_dir/latest.pt`` when it exists.
        allow_config_change: resume even when the config or data fingerprint differs.
    """

    def __init__(
        self,
        config: TrainConfig,
        data: TrainingData,
        dist: DistInfo | None = None,
        loss_fn: nn.Module | None = None,
        resume: bool = True,
        allow_config_change: bool = False,
    ):
        self.config = config
        self.data = data
        self.dist = dist or DistInfo()
        self.out_dir = Path(config.output_dir)
        self.device = self.dist.device
        check_patch_size(config.model, config.data.patch_size)
        if list(data.classes) != list(config.data.classes):
            raise ValueError(f"data source classes {data.classes} != data.classes {config.data.classes}")

        if config.cpu_threads is not None:
            torch.set_num_threads(config.cpu_threads)
        torch.manual_seed(config.seed + self.dist.rank)
        np.random.seed(config.seed + self.dist.rank)
        self.net = build_network(config.model, data.in_channels, len(data.classes)).to(self.device)
        self.model: nn.Module = self.net
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        o = config.optim
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, o.warmup_steps, o.total_steps, o.poly_power)
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)  # bf16 needs no loss scaling
        self.ema = EMA(self.net, o.ema_decay) if o.ema_decay else None
        self.loss_fn = (loss_fn or build_loss(config)).to(self.device)
        self.step = 0
        self.best_metric = -math.inf
        self.config_fingerprint = config.fingerprint()
        self.data_fingerprint = data.fingerprint()
        self.logger = None
        self._stop_requested = False
        self.weights_sha256: str | None = None  # of the last check that all ranks agree (under torchrun)

        resumed = False
        if resume and (self.out_dir / ckpt_io.LATEST).is_file():
            self.load(self.out_dir / ckpt_io.LATEST, check=not allow_config_change)
            resumed = True
        elif config.init_from is not None:
            self.init_weights(config.init_from)
        # Under torchrun every rank loads latest.pt itself: one that found none (an output_dir not shared by all
        # nodes), another config or other data would otherwise train on silently, or hang at the end.
        self._check_ranks_agree("start")
        if self.dist.is_main:
            from train.logging import RunLogger

            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, self.out_dir / "config.yaml")
            self.logger = RunLogger(self.out_dir, resume_step=self.step if resumed else None)
        self.resumed = resumed

    # ------------------------------------------------------------------------------------------ checkpoints

    def state(self, replicas: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Checkpoint payload (see :mod:`train.checkpoint`); ``replicas``: what :meth:`_check_ranks_agree`
        gathered from every rank at this step (under torchrun)."""
        import monai

        return {
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": ckpt_io.rng_state(),
            "rng_per_rank": [r["rng"] for r in replicas] if replicas else None,
            "replicas": [r["weights_sha256"] for r in replicas] if replicas else None,
            "world_size": self.dist.world_size,
            "step": self.step,
            "best_metric": self.best_metric,
            "config": self.config.model_dump(mode="json"),
            "config_fingerprint": self.config_fingerprint,
            "data_fingerprint": self.data_fingerprint,
            "classes": list(self.data.classes),
            "versions": {"torch": torch.__version__, "monai": monai.__version__},
        }

    def save(self, name: str = ckpt_io.LATEST, replicas: list[dict[str, Any]] | None = None) -> Path | None:
        """Write a checkpoint (rank 0 only; other ranks return None)."""
        if not self.dist.is_main:
            return None
        path = self.out_dir / name
        ckpt_io.save_checkpoint(path, self.state(replicas))
        return path

    def save_latest(self) -> Path | None:
        """Write ``latest`` after checking that every rank holds the same weights (every rank must call it)."""
        replicas = self._check_ranks_agree("checkpoint", with_rng=True)
        return self.save(ckpt_io.LATEST, replicas)

    def _check_ranks_agree(self, when: str, with_rng: bool = False) -> list[dict[str, Any]] | None:
        """Under torchrun, gather every rank's step, fingerprints and :func:`weights_sha256` (model and EMA) and
        raise :class:`RankDisagreement` on every rank when any differs. Returns what was gathered (with each
        rank's RNG states if ``with_rng``); None in a single process."""
        if not self.dist.distributed:
            return None
        mine = {
            "step": self.step,
            "config_fingerprint": self.config_fingerprint,
            "data_fingerprint": self.data_fingerprint,
            "weights_sha256": ckpt_io.weights_sha256(self.net.state_dict(), self.ema.shadow if self.ema else None),
        }
        gathered = self.dist.all_gather({**mine, "rng": ckpt_io.rng_state() if with_rng else None})
        differ = [k for k in mine if len({g[k] for g in gathered}) > 1]
        if differ:
            values = "; ".join(f"{k}: " + ", ".join(f"rank {r} {g[k]}" for r, g in enumerate(gathered))
                               for k in differ)
            hint = ("every node must see the same output_dir (a shared filesystem), config and data"
                    if when == "start" else "the DDP replicas diverged: something changed weights on one rank "
                    "outside the synchronised optimizer step")
            raise RankDisagreement(f"{when} at step {self.step}: the ranks disagree ({values}); {hint}")
        self.weights_sha256 = mine["weights_sha256"]
        return gathered

    def load(self, path: Path, check: bool = True) -> None:
        """Restore everything from a checkpoint to continue the run."""
        ckpt = ckpt_io.load_checkpoint(path, map_location=self.device)
        if check:
            ckpt_io.check_compatible(ckpt, self.config_fingerprint, self.data_fingerprint, path)
        self.net.load_state_dict(ckpt["model"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        per_rank = ckpt.get("rng_per_rank")
        if per_rank and len(per_rank) == self.dist.world_size:
            ckpt_io.set_rng_state(per_rank[self.dist.rank])  # each rank its own streams, as before the stop
        elif self.dist.is_main:
            ckpt_io.set_rng_state(ckpt["rng"])
        else:  # another world size: rank 0's states on every rank would make all ranks draw the same numbers
            log.warning("%s was written by %s rank(s), this run has %d: rank %d keeps fresh RNG streams", path,
                        ckpt.get("world_size", 1), self.dist.world_size, self.dist.rank)
        self.step = int(ckpt["step"])
        self.best_metric = float(ckpt["best_metric"])
        log.info("resumed from %s at step %d", path, self.step)

    def init_weights(self, path: Path) -> None:
        """Initialise the network (and EMA) from another run's weights (two-stage recipe)."""
        ckpt = ckpt_io.load_checkpoint(path, map_location=self.device)
        weights = ckpt_io.model_weights(ckpt, prefer_ema=True)
        self.net.load_state_dict(weights)
        if self.ema is not None:
            self.ema = EMA(self.net, self.ema.decay)
        log.info("initialised weights from %s", path)

    # ------------------------------------------------------------------------------------------ steps

    def _to_device(self, batch: dict) -> dict:
        out = {}
        for k, v in batch.items():
            out[k] = v.to(self.device, non_blocking=True) if hasattr(v, "to") else v
        return out

    def train_step(self, batch: dict, timing: bool = False) -> dict[str, float]:
        """One optimizer step. Returns the loss components, ``lr`` and ``grad_norm`` (and timings if asked)."""
        self.model.train()
        report_weight = self._schedule_report_weight()
        batch = self._to_device(batch)
        sync = torch.cuda.synchronize if (timing and self.device.type == "cuda") else (lambda: None)
        t0 = time.perf_counter()
        with autocast_context(self.config.optim.amp, self.device):
            outputs = self.model(batch["image"])
            sync()
            t1 = time.perf_counter()
            outputs = [o.float() for o in outputs]
            total, parts = self.loss_fn(
                outputs, batch["labels"], batch["unknown_mask"], batch["has_mask"], batch["targets"], batch["image_hu"]
            )
        sync()
        t2 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.config.optim.grad_clip_norm
        params = [p for p in self.net.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.net)
        self.step += 1
        sync()
        t3 = time.perf_counter()
        out = {"loss": float(total.detach()), "lr": lr, "grad_norm": float(grad_norm), "report_weight": report_weight}
        out.update({k: float(v) for k, v in parts.items() if not torch.is_tensor(v) or v.numel() == 1})
        if timing:
            out.update({"time_forward_s": t1 - t0, "time_loss_s": t2 - t1, "time_backward_step_s": t3 - t2})
        return out

    def _schedule_report_weight(self) -> float:
        """Report-loss weight of this step (``optim.report_start_step`` / ``report_ramp_steps``), set on the loss
        module when it carries a :class:`LossConfig` as ``cfg`` (a custom loss without one is left alone)."""
        o = self.config.optim
        factor = report_weight_factor(self.step, o.report_start_step, o.report_ramp_steps)
        weight = self.config.loss.report_weight * factor
        # With report_early_channels those channels keep the full weight; the schedule scales the others.
        update = ({"report_weight": self.config.loss.report_weight, "report_late_factor": factor}
                  if self.config.loss.report_early_channels else {"report_weight": weight})
        cfg = getattr(self.loss_fn, "cfg", None)
        if isinstance(cfg, LossConfig) and any(getattr(cfg, k) != v for k, v in update.items()):
            self.loss_fn.cfg = cfg.model_copy(update=update)
        return weight

    def eval_network(self) -> nn.Module:
        """A copy of the network carrying the EMA weights (or the raw ones), in eval mode."""
        # A fresh instance: MONAI's DynUNet keeps references to its last outputs, which deepcopy refuses.
        net = build_network(self.config.model, self.data.in_channels, len(self.data.classes)).to(self.device)
        net.load_state_dict(self.ema.shadow if self.ema is not None else self.net.state_dict())
        return net.eval()

    def validate(self) -> dict[str, float]:
        """Sliding-window inference on the validation cases; Dice per class group and a PNG (rank 0)."""
        from train.evaluate import dice_per_channel
        from train.logging import place_reported_ball, save_validation_png

        net = self.eval_network()
        lesion = self.config.data.lesion_channels
        organ = [i for i in range(len(self.data.classes)) if i not in lesion]
        dice_l, dice_o, panels = [], [], []
        for i, case in enumerate(self.data.val_cases()):
            prob = predict_probabilities(
                net, case.image, self.config.data.patch_size, self.config.validation.overlap, self.device,
                amp=self.config.optim.amp, sw_batch_size=self.config.validation.sw_batch_size,
            )
            pred = prob > 0.5
            if case.labels is not None:
                d = dice_per_channel(pred, case.labels > 0.5)
                dice_l += [v for c, v in enumerate(d) if c in lesion and not math.isnan(v)]
                dice_o += [v for c, v in enumerate(d) if c in organ and not math.isnan(v)]
            if i < self.config.validation.png_cases:
                spacing = np.asarray(case.spacing_mm)
                balls = []
                for t in case.reported_tumors:
                    diam_vox = float(max(t["diameters_mm"]) / spacing.mean())
                    centre = place_reported_ball(prob[t["channel"]].numpy(), np.asarray(t["group_mask"]), diam_vox)
                    if centre is not None:
                        balls.append((centre, diam_vox))
                panels.append({
                    "ct_id": case.ct_id,
                    "hu": case.image_hu[0].numpy(),
                    "pred": pred[lesion].any(0).numpy(),
                    "truth": (case.labels[lesion] > 0.5).any(0).numpy() if case.labels is not None else None,
                    "balls": balls,
                })
        metrics = {
            "dice_lesion": float(np.mean(dice_l)) if dice_l else 0.0,
            "dice_organ": float(np.mean(dice_o)) if dice_o else 0.0,
        }
        if panels:
            save_validation_png(
                self.out_dir / "val_png" / f"step_{self.step:07d}.png", panels,
                f"step {self.step}  lesion Dice {metrics['dice_lesion']:.3f}",
            )
        return metrics

    # ------------------------------------------------------------------------------------------ loop

    def _request_stop(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self._stop_requested = True

    def fit(self, max_steps: int | None = None) -> dict[str, Any]:
        """Train until ``optim.total_steps`` (or ``max_steps`` more steps); returns a summary.

        SIGTERM / SIGINT finish the current step, write ``latest`` and return; under torchrun every rank stops
        after the same step (the first one at which any rank was signalled).
        """
        from tqdm import tqdm

        cfg = self.config
        total = cfg.optim.total_steps
        stop_at = total if max_steps is None else min(total, self.step + max_steps)
        old_handlers = {}
        # Every rank, not only rank 0: torchrun (and SLURM) signal all workers, and a rank left with the default
        # handler would die mid-step, failing the others' next all-reduce before rank 0 could save.
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                old_handlers[sig] = signal.signal(sig, self._request_stop)
            except ValueError:  # not the main thread
                pass
        batches = self.data.train_batches(self.dist.rank, self.dist.world_size, cfg.seed, start_step=self.step)
        # disable= only off the main rank: an explicit False would override the TQDM_DISABLE environment variable.
        bar = tqdm(total=total, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   **({} if self.dist.is_main else {"disable": True}))
        last_val: dict[str, float] = {}
        t_start = time.perf_counter()
        steps_done = 0
        stopped = False
        try:
            while self.step < stop_at:
                # One all-reduce per step under torchrun: the ranks received the signal at different moments.
                if self.dist.any(self._stop_requested):
                    stopped = True
                    break
                values = self.train_step(next(batches))
                steps_done += 1
                bar.update(1)
                bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{values['lr']:.2e}")
                if self.logger and (self.step % cfg.log_every_steps == 0 or self.step == 1):
                    self.logger.log(self.step, "train", values)
                if self.step % cfg.validation.every_steps == 0 or self.step == stop_at == total:
                    last_val = self._validate_and_checkpoint()
                if self.step % cfg.validation.checkpoint_every_steps == 0 or self.step == stop_at:
                    self.save_latest()
            if stopped:
                self.save_latest()
        finally:
            bar.close()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        elapsed = time.perf_counter() - t_start
        summary = {
            "step": self.step,
            "seconds": elapsed,
            "steps_per_s": steps_done / elapsed if elapsed > 0 else 0.0,
            "best_metric": self.best_metric,
            **{f"val_{k}": v for k, v in last_val.items()},
            **({"world_size": self.dist.world_size, "weights_sha256": self.weights_sha256}
               if self.dist.distributed else {}),
            "output_dir": str(self.out_dir),
        }
        if self.logger:
            self.logger.close()
        return summary

    def _validate_and_checkpoint(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.dist.is_main:
            metrics = self.validate()
            self.logger.log(self.step, "val", metrics)
            value = metrics.get(self.config.validation.metric)
            if value is not None and value > self.best_metric:
                self.best_metric = value
                self.save(ckpt_io.BEST)
        self.dist.barrier()
        return metrics
