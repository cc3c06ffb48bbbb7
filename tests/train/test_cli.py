"""End-to-end `rsuper train` runs in subprocesses: SIGKILL + resume, and a 2-process gloo run under torchrun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY = [
    "data.source=synthetic",
    "data.classes=[liver, kidney, liver_lesion, kidney_lesion]",
    "data.patch_size=[16, 16, 16]",
    "model.filters=[4, 8, 16]",
    "optim.warmup_steps=1",
    "optim.lr=0.01",
    "validation.every_steps=1000",
]

BIN = Path(sys.executable).parent


def _args(out, steps):
    sets = [*TINY, f"output_dir={out}", f"optim.total_steps={steps}", "validation.checkpoint_every_steps=2",
            "log_every_steps=1"]
    return [a for s in sets for a in ("--set", s)]


def _steps(metrics: Path) -> list[int]:
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines() if '"train"' in line]


@pytest.mark.slow
def test_resume_after_sigkill_continues_the_step_count(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([str(BIN / "rsuper"), "train", *_args(out, 8)], stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "latest.pt").is_file():
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "latest.pt").is_file(), "no checkpoint before the kill"
    from train.checkpoint import load_checkpoint

    killed_at = load_checkpoint(out / "latest.pt")["step"]
    assert 2 <= killed_at < 8
    done = subprocess.run([str(BIN / "rsuper"), "train", *_args(out, 8)], capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[0])["step"] == 8
    assert _steps(out / "metrics.jsonl") == list(range(1, 9))  # one consistent curve, no duplicates


@pytest.mark.slow
def test_two_process_gloo_run_completes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", str(BIN / "rsuper"), "train",
         *_args(out, 3)],
        capture_output=True, text=True, timeout=500, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[0])["step"] == 3
    assert _steps(out / "metrics.jsonl") == [1, 2, 3]  # rank 0 logs once per step
