"""Run TotalSegmentator (v2) as a program, when it is installed and its weights are present.

TotalSegmentator is not a dependency: it brings its own torch, so it is best installed in its own environment and
called through its command line (``TotalSegmentator -i CT -o DIR --task TASK``), which writes one mask file per
class, ``DIR/<class>.nii.gz``, with the class names of its class map (:mod:`schemas.label_aliases`). Nothing is
downloaded from here: weights missing on disk give one line saying how to fetch them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from schemas.label_aliases import TOTALSEGMENTATOR_LIVER_SEGMENTS, TOTALSEGMENTATOR_TOTAL

#: Class names each task writes, one file per class.
TASK_CLASSES: dict[str, tuple[str, ...]] = {
    "total": TOTALSEGMENTATOR_TOTAL,
    "liver_segments": TOTALSEGMENTATOR_LIVER_SEGMENTS,
}
#: nnU-Net dataset ids of each task's weights (TotalSegmentator's map_tasks_config.py): (default, --fast).
_TASK_WEIGHTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "total": ((291, 292, 293, 294, 295), (297,)),
    "liver_segments": ((570,), (570,)),
}

INSTALL_HINT = (
    "TotalSegmentator is not installed: `pip install TotalSegmentator` (best in its own virtual environment, it "
    "brings its own torch) with `TotalSegmentator` on PATH (or --executable PATH), or give masks made elsewhere: "
    "--source segmentations (one file per class in <case>/segmentations/) or --label-map FILE --label-names FILE"
)


class TotalSegmentatorError(RuntimeError):
    """TotalSegmentator is missing, has no weights, or failed; the message says what to do."""


def weights_dir() -> Path:
    """Where TotalSegmentator looks for its weights (TOTALSEG_WEIGHTS_PATH, else TOTALSEG_HOME_DIR or
    ~/.totalsegmentator, then nnunet/results), as its config.get_weights_dir does."""
    if os.environ.get("TOTALSEG_WEIGHTS_PATH"):
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"])
    home = Path(os.environ["TOTALSEG_HOME_DIR"]) if os.environ.get("TOTALSEG_HOME_DIR") else (
        Path.home() / ".totalsegmentator")
    return home / "nnunet" / "results"


def missing_weights(task: str, fast: bool = False) -> list[int]:
    """Dataset ids of ``task``'s weights that are not on disk."""
    folder = weights_dir()
    ids = _TASK_WEIGHTS[task][1 if fast else 0]
    return [i for i in ids if not any(folder.glob(f"Dataset{i}_*"))]


def check_ready(tasks: list[str], executable: str, fast: bool = False) -> str:
    """The path of the TotalSegmentator program, once it and every task's weights are found.

    Raises:
        TotalSegmentatorError: one line: how to install it, or how to fetch the weights.
    """
    program = shutil.which(executable)
    if program is None:
        raise TotalSegmentatorError(INSTALL_HINT)
    for task in tasks:
        if missing_weights(task, fast):
            raise TotalSegmentatorError(
                f"TotalSegmentator weights for task {task!r} are not in {weights_dir()}: run "
                f"`totalseg_download_weights -t {task}` once (needs internet), or point TOTALSEG_WEIGHTS_PATH or "
                f"TOTALSEG_HOME_DIR at a copy")
    return program


def finished(out_dir: Path, task: str) -> bool:
    """Whether ``out_dir`` holds every class file of ``task`` (a finished run, by TotalSegmentator or earlier)."""
    return all((out_dir / f"{name}.nii.gz").is_file() for name in TASK_CLASSES[task])


def run_task(program: str | None, ct_path: Path, out_dir: Path, task: str, *, device: str = "gpu",
             fast: bool = False) -> Path:
    """Run one task on one CT into ``out_dir`` (one file per class); a finished folder is kept as it is (then
    ``program`` may be None).

    The output goes to a temporary folder renamed when every class file is there, so a killed run leaves no
    half-written folder.

    Raises:
        TotalSegmentatorError: the run failed or wrote fewer files than the task's classes (naming the CT).
    """
    expected = TASK_CLASSES[task]
    if finished(out_dir, task):
        return out_dir
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    command = [program, "-i", str(ct_path), "-o", str(tmp), "--task", task, "--device", device]
    if fast and task == "total":  # liver_segments has no fast model
        command.append("--fast")
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        shutil.rmtree(tmp, ignore_errors=True)
        raise TotalSegmentatorError(f"{ct_path}: TotalSegmentator --task {task} exited {proc.returncode}: {tail[0]}")
    missing = [name for name in expected if not (tmp / f"{name}.nii.gz").is_file()]
    if missing:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TotalSegmentatorError(f"{ct_path}: TotalSegmentator --task {task} wrote no file for {missing[:5]}"
                                    f"{' ...' if len(missing) > 5 else ''}")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir
