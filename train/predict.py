"""Sliding-window inference writing NIfTI masks in each input's own geometry.

Per input CT ``OUT/<ct_id>/`` receives:

* ``lesions.nii.gz``: uint8 label map, value ``1 + i`` for the i-th lesion channel (names in ``labels.json``);
* ``channels.nii.gz``: uint8 (X, Y, Z, C) binary mask of every output channel (multi-label: organs overlap
  their sub-segments and lesions);
* ``probabilities.nii.gz`` (optional): float32 (X, Y, Z, C_lesion) lesion probabilities;
* ``summary.json``: the CT's path, and per organ with a lesion channel the predicted lesion volume (mm3) and the
  maximum lesion probability (the per-CT detection score used by ``rsuper evaluate``).

The CT goes through the training preprocessing (RAS orientation, optional resampling, HU window and
normalisation), the network runs on that grid, and the probabilities are mapped back to the input voxel grid.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from train.config import TrainConfig
from train.inference import predict_probabilities

log = logging.getLogger("rsuper.predict")


def restrict_to_organs(
    prob: torch.Tensor, classes: Sequence[str], spacing_mm: Sequence[float], margin_mm: float = 3.0
) -> torch.Tensor:
    """Zero each ``<organ>_lesion`` probability outside the predicted organ (p > 0.5) grown by ``margin_mm``.

    Lesion channels whose organ is not an output channel are left as they are.
    """
    out = prob.clone()
    for c, name in enumerate(classes):
        organ = name.removesuffix("_lesion")
        if name.endswith("_lesion") and organ in classes:
            organ_mask = (prob[classes.index(organ)] > 0.5).numpy()
            grown = _grow_mm(organ_mask, margin_mm, spacing_mm)
            out[c] *= torch.from_numpy(grown)
    return out


def _grow_mm(mask: np.ndarray, margin_mm: float, spacing_mm: Sequence[float]) -> np.ndarray:
    if margin_mm <= 0 or not mask.any():
        return mask
    dist = ndimage.distance_transform_edt(~mask, sampling=spacing_mm)
    return dist <= margin_mm


MIN_LESION_COMPONENT_MM3 = 4 / 3 * np.pi * 2.5**3
"""Smallest connected lesion component counted as a detection: a 5 mm sphere (65.4 mm3), the smallest tumour the
report losses size (``presence_min_diameter_mm``)."""


def remove_small_components(mask: np.ndarray, spacing_mm: Sequence[float],
                            min_volume_mm3: float = MIN_LESION_COMPONENT_MM3) -> np.ndarray:
    """Drop 26-connected components smaller than ``min_volume_mm3`` (voxel volume from ``spacing_mm``).

    Sized in mm3, not voxels: the one-voxel morphological opening used before erased every tumour under ~3 voxels
    across, i.e. under ~11 mm at 3.7 mm spacing.
    """
    if not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    voxel_mm3 = float(np.prod(spacing_mm))
    keep = np.bincount(labels.ravel(), minlength=n + 1) * voxel_mm3 >= min_volume_mm3
    keep[0] = False
    return keep[labels]


def detection_summary(prob: np.ndarray, classes: Sequence[str], spacing_mm: Sequence[float]) -> dict:
    """Per organ with a lesion channel: predicted lesion volume (mm3, counting only connected components of at
    least :data:`MIN_LESION_COMPONENT_MM3`, :func:`remove_small_components`) and score.

    Args:
        prob: float (C, X, Y, Z) probabilities (already restricted to organs if wanted).
        classes: channel names.
        spacing_mm: voxel spacing of ``prob``.

    Returns:
        ``{organ: {"lesion_volume_mm3": float, "max_probability": float}}``.
    """
    voxel_mm3 = float(np.prod(spacing_mm))
    out = {}
    for c, name in enumerate(classes):
        if name.endswith("_lesion"):
            mask = remove_small_components(prob[c] > 0.5, spacing_mm)
            out[name.removesuffix("_lesion")] = {
                "lesion_volume_mm3": float(mask.sum()) * voxel_mm3,
                "max_probability": float(prob[c].max()),
            }
    return out


def resample_to_grid(
    array: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape: Sequence[int], order: int
) -> np.ndarray:
    """Sample ``array`` (..., X, Y, Z) given on ``src_affine`` at the voxel centres of another grid.

    Exact for pure axis flips / permutations (integer coordinates); linear (order 1) or nearest (0) otherwise.
    """
    m = np.linalg.inv(src_affine) @ dst_affine
    lead = array.shape[:-3]
    flat = array.reshape(-1, *array.shape[-3:])
    out = np.stack([
        ndimage.affine_transform(a, m[:3, :3], offset=m[:3, 3], output_shape=tuple(dst_shape), order=order,
                                 mode="nearest")
        for a in flat
    ])
    return out.reshape(*lead, *dst_shape)


def load_for_inference(path: Path, config: TrainConfig) -> tuple[torch.Tensor, np.ndarray, dict]:
    """Preprocess one CT exactly as for training.

    Returns:
        normalised image (1, X, Y, Z) on the training grid, that grid's affine (4, 4), and the input's
        ``{"affine", "shape", "header"}``.
    """
    import nibabel as nib

    from train.data.cache import CaseFiles, preprocess_case
    from train.data.intensity import normalise_image

    img = nib.load(str(path))
    files = CaseFiles(ct_id=path.name, image_path=str(path), organ_mask_path=None, lesion_mask_path=None,
                      content_sha256="", organ_label_names={0: "background"}, lesion_label_names=None)
    arrays, meta = preprocess_case(files, config.data.preprocess)
    image = normalise_image(arrays["image"], config.data, meta)
    original = {"affine": np.asarray(img.affine, float), "shape": img.shape[:3], "header": img.header}
    return torch.from_numpy(image[None].astype(np.float32)), np.asarray(meta["affine"], float), original


def find_inputs(path: Path) -> list[tuple[str, Path]]:
    """(ct_id, CT file) pairs: a single NIfTI file, a folder of ``*.nii(.gz)``, or case folders with ``ct.nii.gz``.

    Raises:
        FileNotFoundError: nothing found, naming the path.
    """
    path = Path(path)
    if path.is_file():
        return [(_stem(path), path)]
    found = sorted((p.parent.name, p) for p in path.glob("**/ct.nii.gz"))
    if not found:
        found = sorted((_stem(p), p) for p in path.glob("*.nii*"))
    if not found:
        raise FileNotFoundError(f"{path}: no CT found (a .nii/.nii.gz file, a folder of them, or <id>/ct.nii.gz)")
    return found


def _stem(p: Path) -> str:
    name = p.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name.removesuffix("_0000")


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def predict_case(
    net: torch.nn.Module,
    config: TrainConfig,
    ct_path: Path,
    out_dir: Path,
    *,
    overlap: float = 0.5,
    device: torch.device | str = "cpu",
    save_probabilities: bool = False,
    restrict_lesions_to_organ: bool = False,
) -> dict:
    """Predict one CT and write its outputs (module docstring); returns the summary."""
    classes = list(config.data.classes)
    image, grid_affine, original = load_for_inference(ct_path, config)
    prob = predict_probabilities(net, image, config.data.patch_size, overlap, device, amp=config.optim.amp)
    prob_np = resample_to_grid(prob.numpy(), grid_affine, original["affine"], original["shape"], order=1)
    if restrict_lesions_to_organ:
        spacing = np.linalg.norm(original["affine"][:3, :3], axis=0)
        prob_np = restrict_to_organs(torch.from_numpy(prob_np), classes, spacing).numpy()
    return write_outputs(out_dir, prob_np, classes, original["affine"], ct_path, save_probabilities)


def write_outputs(out_dir: Path, prob: np.ndarray, classes: Sequence[str], affine: np.ndarray, ct_path: Path,
                  save_probabilities: bool = False) -> dict:
    """Write one CT's outputs (module docstring) from its probabilities on its own grid; returns the summary.

    Args:
        out_dir: the CT's output folder (created).
        prob: float (C, X, Y, Z) probabilities of ``classes`` on the CT's voxel grid.
        classes: channel names.
        affine: the CT's voxel -> world affine (mm).
        ct_path: the CT file, recorded in the summary for the case pages.
        save_probabilities: also write ``probabilities.nii.gz``.
    """
    classes = list(classes)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = prob > 0.5
    lesion_idx = [c for c, n in enumerate(classes) if n.endswith("_lesion")]
    lesion_map = np.zeros(prob.shape[1:], np.uint8)
    for i, c in enumerate(lesion_idx):
        lesion_map[binary[c]] = i + 1
    _save(lesion_map, affine, out_dir / "lesions.nii.gz")
    _save(np.moveaxis(binary, 0, -1).astype(np.uint8), affine, out_dir / "channels.nii.gz")
    if save_probabilities:
        _save(np.moveaxis(prob[lesion_idx], 0, -1).astype(np.float32), affine, out_dir / "probabilities.nii.gz")
    summary = {"ct_id": out_dir.name, "ct_path": str(Path(ct_path).resolve()), "spacing_mm": spacing.tolist(),
               "organs": detection_summary(prob, classes, spacing)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    (out_dir / "labels.json").write_text(json.dumps({
        "lesions": {str(i + 1): classes[c] for i, c in enumerate(lesion_idx)},
        "channels": classes,
    }, indent=1))
    return summary


def load_network(checkpoint: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, TrainConfig]:
    """Network (EMA weights when saved) and the run's config from a checkpoint."""
    from train.checkpoint import load_checkpoint, model_weights
    from train.model import build_network

    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    config = TrainConfig.model_validate(ckpt["config"])
    net = build_network(config.model, 1, len(config.data.classes))
    net.load_state_dict(model_weights(ckpt))
    return net.to(device).eval(), config
