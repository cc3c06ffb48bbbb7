"""Resume evidence: one short `rsuper train` run uninterrupted, the same run killed with SIGKILL midway and
restarted from `latest.pt`; both per-step loss curves go into a PNG and one JSON line gives the largest deviation.

Batches depend only on (seed, rank, step) and the checkpoint restores model, EMA, optimizer, schedule and RNG
states, so the curves should be identical, step for step, after the restart point.

    python benchmarks/bench_resume.py [--config configs/demo.yaml] [--steps 40] [--kill-at 23]
        [--out benchmarks/results/resume] [--set KEY=VALUE ...]

The killed run is stopped once its ``metrics.jsonl`` reaches step ``--kill-at``; with ``latest.pt`` written every
``--checkpoint-every`` steps it restarts from the last multiple of that and redoes the steps in between.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def train_command(config: str, out: Path, steps: int, checkpoint_every: int, extra: list[str]) -> list[str]:
    """`rsuper train` for a run of ``steps`` steps logging the loss at every step."""
    sets = [f"output_dir={out}", f"optim.total_steps={steps}", f"validation.checkpoint_every_steps={checkpoint_every}",
            f"validation.every_steps={steps}", "log_every_steps=1", *extra]
    return [str(BIN / "rsuper"), "train", config, *[a for s in sets for a in ("--set", s)]]


def read_losses(metrics: Path) -> dict[int, float]:
    """step -> training loss from a run's metrics.jsonl (a line cut by the kill is skipped)."""
    out = {}
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("kind") == "train":
            out[int(row["step"])] = float(row["loss"])
    return out


def last_step(metrics: Path) -> int:
    return max(read_losses(metrics), default=0) if metrics.is_file() else 0


def run_killed(cmd: list[str], out: Path, kill_at: int, timeout_s: float) -> int:
    """Start ``cmd``, SIGKILL it once step ``kill_at`` is logged; returns the step stored in latest.pt."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None and last_step(out / "metrics.jsonl") < kill_at:
        time.sleep(0.05)
    if proc.poll() is not None:
        raise RuntimeError(f"the run to kill ended by itself (exit {proc.returncode}) before step {kill_at}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from train.checkpoint import load_checkpoint

    return int(load_checkpoint(out / "latest.pt")["step"])


def plot(reference: dict[int, float], before: dict[int, float], after: dict[int, float], resumed_at: int,
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(list(reference), list(reference.values()), "-", color="black", lw=2.5, alpha=0.4, label="uninterrupted")
    ax.plot(list(before), list(before.values()), "o", ms=3, color="tab:red", label="killed run (before SIGKILL)")
    ax.plot(list(after), list(after.values()), "x", ms=4, color="tab:blue", label="resumed from latest.pt")
    ax.axvline(resumed_at, color="gray", ls=":", label=f"resumed at step {resumed_at}")
    ax.set(xlabel="step", ylabel="training loss", title="SIGKILL + resume vs uninterrupted")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--kill-at", type=int, default=23, help="SIGKILL once this step is logged.")
    ap.add_argument("--checkpoint-every", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/resume"))
    ap.add_argument("--set", dest="sets", action="append", default=[], help="Extra config override.")
    ap.add_argument("--timeout-s", type=float, default=900)
    args = ap.parse_args()
    if not 0 < args.kill_at < args.steps:
        ap.error("--kill-at must lie between 0 and --steps")
    ref_dir, kill_dir = args.out / "uninterrupted", args.out / "killed"
    for d in (ref_dir, kill_dir):
        shutil.rmtree(d, ignore_errors=True)
    load0, t0 = os.getloadavg()[0], time.perf_counter()

    ref_cmd = train_command(args.config, ref_dir, args.steps, args.checkpoint_every, args.sets)
    subprocess.run(ref_cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=args.timeout_s)
    reference = read_losses(ref_dir / "metrics.jsonl")

    kill_cmd = train_command(args.config, kill_dir, args.steps, args.checkpoint_every, args.sets)
    resumed_at = run_killed(kill_cmd, kill_dir, args.kill_at, args.timeout_s)
    before = read_losses(kill_dir / "metrics.jsonl")  # includes the steps after latest.pt that get redone
    subprocess.run(kill_cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=args.timeout_s)
    resumed = read_losses(kill_dir / "metrics.jsonl")
    after = {s: v for s, v in resumed.items() if s > resumed_at}

    steps = sorted(reference)
    missing = [s for s in steps if s not in resumed]
    dev_all = max(abs(reference[s] - resumed[s]) for s in steps if s in resumed)
    dev_after = max((abs(reference[s] - after[s]) for s in after), default=float("nan"))
    redone = [s for s in before if s > resumed_at]
    dev_redone = max((abs(before[s] - resumed[s]) for s in redone), default=0.0)
    png = args.out / "resume_curves.png"
    plot(reference, before, after, resumed_at, png)
    print(json.dumps({
        "bench": "resume", "config": args.config, "steps": args.steps, "killed_after_step": max(before),
        "resumed_from_step": resumed_at, "steps_missing": missing,
        "max_abs_loss_deviation": dev_all, "max_abs_loss_deviation_after_restart": dev_after,
        "max_abs_deviation_redone_steps": dev_redone,
        "loss_range": [min(reference.values()), max(reference.values())],
        "png": str(png), "seconds": round(time.perf_counter() - t0, 1),
        "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
