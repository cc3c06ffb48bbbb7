"""Run logging (rank 0 only): TensorBoard, ``metrics.jsonl`` and validation PNGs.

``metrics.jsonl`` is the source of truth: one JSON object per line with ``step``, ``kind`` (``train`` / ``val``)
and the values. After a resume, lines beyond the resumed step (written after the last checkpoint by the killed
run) are dropped so the file holds one consistent curve.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage


def truncate_metrics(path: Path, max_step: int) -> int:
    """Drop lines whose ``step`` exceeds ``max_step`` (atomic rewrite). Returns the number of lines kept."""
    if not path.is_file():
        return 0
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= max_step:
                kept.append(line)
        except json.JSONDecodeError:  # a line cut by SIGKILL
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)
    return len(kept)


class RunLogger:
    """TensorBoard + JSONL writer. Create it only on rank 0.

    Args:
        out_dir: run folder; writes ``metrics.jsonl``, ``tensorboard/`` and ``val_png/``.
        resume_step: when resuming, metrics after this step are discarded first.
    """

    def __init__(self, out_dir: Path, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        if resume_step is not None:
            truncate_metrics(self.metrics_path, resume_step)
        elif self.metrics_path.exists():
            self.metrics_path.unlink()
        self.png_dir = self.out_dir / "val_png"
        self.tb = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"), purge_step=resume_step)

    def log(self, step: int, kind: str, values: dict[str, float]) -> None:
        """Append one record and mirror it to TensorBoard as ``kind/name``."""
        clean = {k: float(v) for k, v in values.items()}
        with self.metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, "kind": kind, **clean}) + "\n")
        for k, v in clean.items():
            if math.isfinite(v):
                self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        self.tb.flush()
        self.tb.close()


def place_reported_ball(prob: np.ndarray, group_mask: np.ndarray, diameter_vox: float) -> np.ndarray | None:
    """Where a reported tumour of ``diameter_vox`` best fits the prediction inside its organ / sub-segment.

    The centre maximises the mean lesion probability over a cube of the tumour's size (a cheap stand-in for the
    Ball Loss placement, used only for display).

    Args:
        prob: float (D, H, W) lesion probability.
        group_mask: bool (D, H, W) voxels of the reported organ / sub-segment.
        diameter_vox: tumour diameter in voxels.

    Returns:
        Centre voxel index (3,) or None when the group is empty.
    """
    if not group_mask.any():
        return None
    size = max(1, int(round(diameter_vox)))
    score = ndimage.uniform_filter(prob.astype(np.float32), size=size, mode="constant")
    score = np.where(group_mask, score, -1.0)
    return np.asarray(np.unravel_index(int(np.argmax(score)), prob.shape))


def _window(hu: np.ndarray) -> np.ndarray:
    return np.clip((hu + 150.0) / 400.0, 0.0, 1.0)  # abdominal window, level 50 / width 400 HU


def save_validation_png(path: Path, panels: list[dict[str, Any]], title: str) -> Path:
    """Draw one row per case: CT slice, predicted lesion contour (red), true lesion contour (green) and the
    reported tumour balls (yellow circles of the reported diameter at their best-fit position).

    Args:
        path: PNG to write.
        panels: per case ``{"ct_id", "hu": (D, H, W), "pred": bool (D, H, W), "truth": bool (D, H, W) | None,
            "balls": [(centre (3,), diameter_vox)]}``; the slice is taken along the last axis.
        title: figure title (step, metric).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(panels))
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
    for row, panel in zip(axes, panels):
        hu, pred, truth = panel["hu"], panel["pred"], panel.get("truth")
        balls = panel.get("balls", [])
        focus = pred if pred.any() else (truth if truth is not None and truth.any() else None)
        if balls:
            centre_slice = int(balls[0][0][2])
        elif focus is not None:
            centre_slice = int(np.argmax(focus.sum((0, 1))))
        else:
            centre_slice = hu.shape[2] // 2
        offsets = (-2, 0, 2)
        for ax, off in zip(row, offsets):
            z = int(np.clip(centre_slice + off * max(1, hu.shape[2] // 16), 0, hu.shape[2] - 1))
            ax.imshow(_window(hu[:, :, z]).T, cmap="gray", origin="lower")
            if pred[:, :, z].any():
                ax.contour(pred[:, :, z].T.astype(float), levels=[0.5], colors="red", linewidths=1.0)
            if truth is not None and truth[:, :, z].any():
                ax.contour(truth[:, :, z].T.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
            for centre, diameter in balls:
                dz = abs(z - centre[2])
                if dz < diameter / 2:
                    r = math.sqrt((diameter / 2) ** 2 - dz**2)
                    ax.add_patch(plt.Circle((centre[0], centre[1]), r, fill=False, color="yellow", lw=1.0, ls="--"))
            ax.set_title(f"{panel['ct_id']} z={z}", fontsize=8)
            ax.axis("off")
    fig.suptitle(f"{title}  (red: predicted lesion, green: true lesion, yellow: reported tumour)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
