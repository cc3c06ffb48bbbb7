"""End-to-end `rsuper train` runs through the CLI: SIGKILL + resume, and a 2-process gloo (DDP) run.

The runs happen in forked children of the test process rather than fresh interpreters: torch and MONAI are then
imported once, which on a busy machine is most of the cost of a tiny run. The DDP run sets the environment
torchrun would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) for two forked ranks.
"""

import json
import multiprocessing
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.main import get_command

TINY = [
    "cpu_threads=1",
    "data.source=synthetic",
    "data.classes=[liver, kidney, liver_lesion, kidney_lesion]",
    "data.patch_size=[16, 16, 16]",
    "model.filters=[4, 8, 16]",
    "optim.warmup_steps=1",
    "optim.lr=0.01",
    "validation.every_steps=1000",
]

_FORK = multiprocessing.get_context("fork")


def _args(out, steps):
    sets = [*TINY, f"output_dir={out}", f"optim.total_steps={steps}", "validation.checkpoint_every_steps=2",
            "log_every_steps=1"]
    return ["train", *[a for s in sets for a in ("--set", s)]]


def _steps(metrics: Path) -> list[int]:
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines() if '"train"' in line]


def _cli(args: list[str], stdout: Path, env: dict[str, str] | None = None) -> None:
    """Child process body: run `rsuper ARGS` with stdout to a file, exit with its status."""
    code = 1
    try:
        # A forked child inherits tqdm's thread lock as it was at the fork; another thread of the test process (the
        # tqdm monitor of an earlier test's bar) may have held it then, and nobody would ever release it here.
        import threading

        from tqdm import tqdm
        from tqdm.std import TqdmDefaultWriteLock

        TqdmDefaultWriteLock.th_lock = threading.RLock()
        tqdm.set_lock(TqdmDefaultWriteLock())
        fd = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        os.environ.update(env or {})
        from rsuper.cli import app

        get_command(app).main(args, prog_name="rsuper", standalone_mode=False)
        code = 0
    finally:
        sys.stdout.flush()
        os._exit(code)


@pytest.fixture(scope="module", autouse=True)
def _preloaded():
    """Import what a run needs once, here, so every forked child inherits it."""
    import rsuper.cli  # noqa: F401
    import torch.utils.tensorboard  # noqa: F401

    import train.cli  # noqa: F401
    import train.losses  # noqa: F401
    import train.predict  # noqa: F401
    import train.synthetic  # noqa: F401
    import train.trainer  # noqa: F401


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_resume_after_sigkill_continues_the_step_count(tmp_path):
    out = tmp_path / "run"
    proc = _FORK.Process(target=_cli, args=(_args(out, 8), tmp_path / "killed.out"))
    proc.start()
    deadline = time.time() + 240
    while time.time() < deadline and proc.is_alive() and not (out / "latest.pt").is_file():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert (out / "latest.pt").is_file(), "no checkpoint before the kill"
    from train.checkpoint import load_checkpoint

    killed_at = load_checkpoint(out / "latest.pt")["step"]
    assert 2 <= killed_at < 8
    resumed = _FORK.Process(target=_cli, args=(_args(out, 8), tmp_path / "resumed.out"))
    resumed.start()
    resumed.join(400)
    assert resumed.exitcode == 0
    assert json.loads((tmp_path / "resumed.out").read_text().splitlines()[0])["step"] == 8
    assert _steps(out / "metrics.jsonl") == list(range(1, 9))  # one consistent curve, no duplicates


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_run_completes(tmp_path):
    out = tmp_path / "ddp"
    port = str(_free_port())
    ranks = []
    for rank in range(2):
        env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        ranks.append(_FORK.Process(target=_cli, args=(_args(out, 3), tmp_path / f"rank{rank}.out", env)))
    for p in ranks:
        p.start()
    for p in ranks:
        p.join(400)
    assert [p.exitcode for p in ranks] == [0, 0]
    assert json.loads((tmp_path / "rank0.out").read_text().splitlines()[0])["step"] == 3
    assert (tmp_path / "rank1.out").read_text() == ""  # only rank 0 reports
    assert _steps(out / "metrics.jsonl") == [1, 2, 3]  # rank 0 logs once per step
