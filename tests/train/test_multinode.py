"""Two `torchrun` "nodes" on this machine (one process each, gloo, c10d rendezvous on 127.0.0.1) run the real
`rsuper train` on a tiny phantom set: a node dies after a checkpoint, the other stops within a bounded time, both
resume from the checkpoint's step, and the result is bit-identical to an uninterrupted run.

What the ranks hold is checked by the trainer itself: at every `latest.pt` it gathers each rank's sha256 of its
weights (model and EMA), refuses to write on a mismatch, and records the digests in the checkpoint (`replicas`).
The model has dropout, so a rank resuming with another rank's RNG states would end with other weights.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
STEPS = 40  # the schedule; no run here goes that far
EXTRA_STEPS = 4  # steps the resumed run trains past the checkpoint
TINY = [
    "cpu_threads=1",
    "dist_timeout_s=60",
    "data.source=phantoms",
    "data.phantom_count=4",
    "data.phantom_shape=[32, 32, 24]",
    "data.batch_size=1",
    "data.classes=[liver, kidney, liver_lesion, kidney_lesion]",
    "data.patch_size=[16, 16, 16]",
    "model.filters=[4, 8, 16]",
    "model.dropout=0.2",
    "optim.warmup_steps=1",
    "optim.lr=0.01",
    f"optim.total_steps={STEPS}",
    "validation.every_steps=1000",
    "validation.checkpoint_every_steps=2",
    "log_every_steps=1",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TwoNodes:
    """Two `torchrun --nnodes 2 --nproc-per-node 1` agents started like on two machines, node 0 hosting the
    c10d rendezvous store. Output of node N goes to ``<log_dir>/<name>.node<N>.out``."""

    def __init__(self, name: str, log_dir: Path, phantoms: Path, out: Path, max_steps: int | None = None):
        port, rdzv_id = _free_port(), f"{name}-{uuid.uuid4().hex[:8]}"
        train = ["-m", "rsuper", "train", *[a for s in [*TINY, f"data.root={phantoms}"] for a in ("--set", s)],
                 "-o", str(out), *(["--max-steps", str(max_steps)] if max_steps else [])]
        self.marker = rdzv_id  # in the environment of both agents and their workers, to find them all
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "RSUPER_TEST_RUN": rdzv_id}
        self.logs = [log_dir / f"{name}.node{n}.out" for n in range(2)]
        self.procs = []
        for node in range(2):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                   "--node-rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                   "--rdzv-id", rdzv_id, "--rdzv-conf", f"join_timeout=60,read_timeout=30,is_host={node == 0}",
                   "--local-addr", "127.0.0.1", "--max-restarts", "0", "--monitor-interval", "0.2", *train]
            with open(self.logs[node], "w") as fh:
                self.procs.append(subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                                   start_new_session=True))

    def wait(self, timeout: float) -> list[int | None]:
        """Exit codes (None: still running at the deadline)."""
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        return [p.poll() for p in self.procs]

    def processes(self) -> list[tuple[int, int, dict[str, str]]]:
        """(pid, parent pid, environment) of every live process of this run: agents and workers (torchrun starts
        each worker in a session of its own, so a worker whose agent died is found here too)."""
        found = []
        for d in Path("/proc").glob("[0-9]*"):
            try:
                env = dict(e.split("=", 1) for e in (d / "environ").read_text().split("\0") if "=" in e)
                if env.get("RSUPER_TEST_RUN") == self.marker:
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    found.append((int(d.name), ppid, env))
            except (OSError, UnicodeDecodeError, IndexError, ValueError):
                continue
        return found

    def worker(self, node: int) -> tuple[int, int] | None:
        """(pid, RANK) of node ``node``'s training process, None while it has none."""
        for pid, ppid, env in self.processes():
            if ppid == self.procs[node].pid and "RANK" in env:
                return pid, int(env["RANK"])
        return None

    def output(self, node: int) -> str:
        return self.logs[node].read_text()

    def summary(self) -> dict:
        """The JSON line rank 0 prints at the end."""
        for node in range(2):
            for line in self.output(node).splitlines():
                if line.startswith('{"step"'):
                    return json.loads(line)
        raise AssertionError("no summary line:\n" + "\n".join(self.output(n)[-3000:] for n in range(2)))

    def kill(self) -> None:
        """SIGKILL whatever is left of the run."""
        for pid, _, _ in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs:
            p.wait()


@pytest.fixture
def runs(tmp_path):
    started: list[TwoNodes] = []

    def start(*args, **kw) -> TwoNodes:
        started.append(TwoNodes(*args, **kw))
        return started[-1]

    yield start
    for r in started:  # nothing outlives the test, whatever failed
        r.kill()


def _checkpoint(path: Path) -> dict:
    from train.checkpoint import load_checkpoint, weights_sha256

    ckpt = load_checkpoint(path)
    ckpt["file_sha256"] = weights_sha256(ckpt["model"], ckpt["ema"]["shadow"] if ckpt["ema"] else None)
    return ckpt


def _train_steps(metrics: Path) -> list[int]:
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines() if '"train"' in line]


def _assert_ok(run: TwoNodes, codes) -> None:
    assert codes == [0, 0], "\n".join(f"--- node {n} ({codes[n]})\n{run.output(n)[-4000:]}" for n in range(2))


@pytest.mark.slow
def test_two_nodes_train_die_and_resume(tmp_path, runs):
    t0 = time.monotonic()
    phantoms, out, reference = tmp_path / "phantoms", tmp_path / "run", tmp_path / "uninterrupted"

    # 1. Both nodes train (rank 0 generates the phantoms first, the other reads them); a node dies after a
    #    checkpoint: its agent and worker are SIGKILLed together, as when the machine goes away.
    first = runs("first", tmp_path, phantoms, out)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (out / "latest.pt").is_file() and None in first.wait(0.05):
        pass
    assert (out / "latest.pt").is_file(), "\n".join(first.output(n)[-4000:] for n in range(2))
    workers = [first.worker(n) for n in range(2)]
    assert sorted(w[1] for w in workers) == [0, 1]
    victim = next(n for n in range(2) if workers[n][1] == 0)  # the node of rank 0, the checkpoint writer
    os.kill(workers[victim][0], signal.SIGKILL)
    os.killpg(first.procs[victim].pid, signal.SIGKILL)
    t_kill = time.monotonic()
    codes = first.wait(45)
    survivor_s = time.monotonic() - t_kill
    assert codes[1 - victim] not in (None, 0), f"the surviving node did not fail: {codes}"
    killed = _checkpoint(out / "latest.pt")
    k = killed["step"]
    assert 2 <= k < STEPS and k % 2 == 0
    assert killed["replicas"] == [killed["file_sha256"]] * 2  # rank 1 held the weights rank 0 wrote

    # 2. Both nodes start again: they resume at the checkpoint's step, not at 0, and agree on their weights.
    resumed = runs("resumed", tmp_path, phantoms, out, max_steps=EXTRA_STEPS)
    _assert_ok(resumed, resumed.wait(120))
    assert f"resumed from {out / 'latest.pt'} at step {k}" in "".join(resumed.output(n) for n in range(2))
    summary = resumed.summary()
    final = _checkpoint(out / "latest.pt")
    assert summary["step"] == final["step"] == k + EXTRA_STEPS and summary["world_size"] == 2
    assert final["replicas"] == [final["file_sha256"]] * 2 == [summary["weights_sha256"]] * 2
    assert _train_steps(out / "metrics.jsonl") == list(range(1, k + EXTRA_STEPS + 1))  # one curve, no gap

    # 3. An uninterrupted two-node run to the same step ends with bit-identical weights.
    straight = runs("uninterrupted", tmp_path, phantoms, reference, max_steps=k + EXTRA_STEPS)
    _assert_ok(straight, straight.wait(120))
    assert _checkpoint(reference / "latest.pt")["file_sha256"] == final["file_sha256"]
    print(f"\nmulti-node test: killed at step {k}, survivor stopped {survivor_s:.1f} s after the kill, "
          f"{time.monotonic() - t0:.1f} s in all")


@pytest.mark.slow
def test_two_nodes_stop_together_on_sigterm(tmp_path, runs):
    """SIGTERM to both agents (what SLURM does at preemption or scancel; torchrun passes it to its workers): the
    ranks stop after the same step, rank 0 writes `latest.pt` there and reports, and a resume would carry on."""
    phantoms, out = tmp_path / "phantoms", tmp_path / "run"
    run = runs("sigterm", tmp_path, phantoms, out)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (out / "latest.pt").is_file() and None in run.wait(0.05):
        pass
    assert (out / "latest.pt").is_file(), "\n".join(run.output(n)[-4000:] for n in range(2))
    for p in run.procs:
        p.send_signal(signal.SIGTERM)
    codes = run.wait(45)
    assert None not in codes, f"still running 45 s after SIGTERM: {codes}"
    summary = run.summary()  # rank 0 left fit() normally: rank 1 took part in the last check and save
    ckpt = _checkpoint(out / "latest.pt")
    assert summary["step"] == ckpt["step"] < STEPS
    assert ckpt["replicas"] == [ckpt["file_sha256"]] * 2 == [summary["weights_sha256"]] * 2
