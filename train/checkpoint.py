"""Checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is one ``torch.save`` file with:

* ``model``, ``ema`` (or None), ``optimizer``, ``scheduler``, ``scaler`` state dicts;
* ``rng``: Python, NumPy, torch CPU (and CUDA) generator states of the saving process;
* ``rng_per_rank`` (under torchrun): every rank's generator states, so each rank resumes its own streams;
* ``replicas`` (under torchrun): every rank's :func:`weights_sha256` at this step, checked to be equal before
  the file was written;
* ``world_size``: the number of ranks that trained it;
* ``step`` (optimizer steps done), ``best_metric``, ``config`` (resolved, JSON), ``config_fingerprint``,
  ``data_fingerprint`` and library versions.

``latest.pt`` is rewritten every N steps, ``best.pt`` when the validation metric improves. The file is first
written beside the target and then renamed, so a SIGKILL during saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "latest.pt"
BEST = "best.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used for the requested run."""


def rng_state() -> dict[str, Any]:
    """Generator states of this process (Python, NumPy, torch CPU and CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states saved by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def weights_sha256(*state_dicts: dict[str, torch.Tensor] | None) -> str:
    """sha256 (hex) of the names, dtypes, shapes and bytes of the tensors in ``state_dicts`` (None skipped).

    Equal on two processes exactly when they hold bit-identical weights, whatever device they are on.
    """
    digest = hashlib.sha256()
    for i, sd in enumerate(state_dicts):
        if sd is None:
            continue
        for name in sorted(sd):
            t = sd[name].detach().to("cpu").contiguous()
            digest.update(f"{i}:{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing or unreadable file (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint (best.pt or latest.pt in a run's output_dir)")
    try:
        # Our own files hold RNG tuples and NumPy arrays, which the weights-only unpickler refuses.
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc}); give a best.pt or "
                              "latest.pt written by `rsuper train`") from exc


def check_compatible(ckpt: dict[str, Any], config_fingerprint: str, data_fingerprint: str, path: Path) -> None:
    """Refuse to resume a run whose training settings or data changed.

    Raises:
        CheckpointError: naming what differs and how to override.
    """
    problems = []
    if ckpt.get("config_fingerprint") != config_fingerprint:
        problems.append(f"config fingerprint {ckpt.get('config_fingerprint')} != {config_fingerprint}")
    if ckpt.get("data_fingerprint") != data_fingerprint:
        problems.append(f"data fingerprint {ckpt.get('data_fingerprint')} != {data_fingerprint}")
    if problems:
        raise CheckpointError(
            f"{path}: refusing to resume into a different run ({'; '.join(problems)}). Use another output_dir, "
            "--no-resume to start over, or --allow-config-change to continue anyway."
        )


def model_weights(ckpt: dict[str, Any], prefer_ema: bool = True) -> dict[str, torch.Tensor]:
    """Weights for inference / initialisation: the EMA when present (and preferred), else the raw model."""
    if prefer_ema and ckpt.get("ema") is not None:
        return ckpt["ema"]["shadow"]
    return ckpt["model"]
