"""The collectives of train/distributed.py and the trainer's rank check, on two forked gloo ranks."""

import json
import multiprocessing
import os
import socket
import time
import traceback

import pytest
import torch

from train.distributed import DistInfo, RankDisagreement

_FORK = multiprocessing.get_context("fork")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, body, out_dir) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    code = 1
    try:
        from train.distributed import setup_distributed, teardown_distributed

        dist = setup_distributed("cpu", timeout_s=30)
        try:
            result = {"ok": body(dist, out_dir)}
        except Exception as exc:  # noqa: BLE001 - reported to the test
            result = {"error": type(exc).__name__, "message": str(exc), "trace": traceback.format_exc()}
        (out_dir / f"rank{rank}.json").write_text(json.dumps(result))
        teardown_distributed()
        code = 0
    finally:
        os._exit(code)


def two_ranks(body, tmp_path, timeout=60) -> list[dict]:
    """Run ``body(dist, tmp_path)`` on two gloo ranks; each rank's {"ok": result} or {"error": ..., "message"}."""
    port = _free_port()
    procs = [_FORK.Process(target=_rank_main, args=(r, port, body, tmp_path)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


def test_single_process_collectives_are_local():
    d = DistInfo()
    assert d.all_gather("x") == ["x"] and d.any(True) and not d.any(False) and d.in_turns(lambda: 7) == 7


def _prepare_in_turns(dist, tmp):
    def prepare():
        with open(tmp / "log", "a") as fh:
            fh.write(f"start {dist.rank}\n")
        time.sleep(0.3)
        with open(tmp / "log", "a") as fh:
            fh.write(f"end {dist.rank}\n")
        return dist.rank

    return [dist.in_turns(prepare), dist.any(dist.rank == 1), dist.all_gather(dist.rank * 10)]


@pytest.mark.slow
def test_in_turns_runs_rank_0_first_and_collectives_agree(tmp_path):
    results = two_ranks(_prepare_in_turns, tmp_path)
    assert [r["ok"] for r in results] == [[0, True, [0, 10]], [1, True, [0, 10]]]
    assert (tmp_path / "log").read_text().split("\n")[:4] == ["start 0", "end 0", "start 1", "end 1"]


def _rank_0_fails_to_prepare(dist, tmp):  # noqa: ARG001
    def prepare():
        if dist.rank == 0:
            raise FileNotFoundError("no phantoms here")
        return "prepared"

    return dist.in_turns(prepare)


@pytest.mark.slow
def test_a_failed_preparation_fails_every_rank_at_once(tmp_path):
    t0 = time.monotonic()
    results = two_ranks(_rank_0_fails_to_prepare, tmp_path)
    assert results[0]["error"] == "FileNotFoundError"
    assert results[1] == {"error": "RuntimeError", "message": "rank(s) [0] failed while preparing the data "
                          "(see their output)", "trace": results[1]["trace"]}
    assert time.monotonic() - t0 < 30  # not after the process-group timeout


#: A four-step run on a synthetic 16³ volume, the trainer's smallest.
TINY_RUN = ["cpu_threads=1", "data.source=synthetic", "data.classes=[liver, liver_lesion]",
            "data.patch_size=[16, 16, 16]", "model.filters=[4, 8, 16]", "optim.total_steps=4", "optim.warmup_steps=1"]


def _trainers_with_other_configs(dist, tmp):
    from train.config import load_config
    from train.synthetic import SyntheticData
    from train.trainer import Trainer

    sets = [*TINY_RUN, f"output_dir={tmp / 'run'}", f"optim.lr={0.01 if dist.rank == 0 else 0.02}"]
    cfg = load_config(None, sets)
    Trainer(cfg, SyntheticData(cfg.data, volume_shape=(16, 16, 16), num_val=1), dist, resume=False)
    return "started"


@pytest.mark.slow
def test_ranks_with_different_configs_refuse_to_start(tmp_path):
    results = two_ranks(_trainers_with_other_configs, tmp_path)
    assert [r.get("error") for r in results] == [RankDisagreement.__name__] * 2
    assert "start at step 0: the ranks disagree (config_fingerprint: rank 0 " in results[0]["message"]
    assert "every node must see the same output_dir" in results[0]["message"]


def _replicas_diverge(dist, tmp):
    from train.config import load_config
    from train.synthetic import SyntheticData
    from train.trainer import Trainer

    sets = [*TINY_RUN, f"output_dir={tmp / 'run'}", "validation.checkpoint_every_steps=2",
            "validation.every_steps=1000"]
    cfg = load_config(None, sets)
    trainer = Trainer(cfg, SyntheticData(cfg.data, volume_shape=(16, 16, 16), num_val=1), dist, resume=False)
    if dist.rank == 1:
        with torch.no_grad():  # a change outside the synchronised optimizer step
            next(trainer.net.parameters()).add_(1e-3)
    trainer.fit()
    return "finished"


@pytest.mark.slow
def test_diverged_replicas_fail_the_checkpoint(tmp_path):
    results = two_ranks(_replicas_diverge, tmp_path)
    assert [r.get("error") for r in results] == [RankDisagreement.__name__] * 2
    assert "checkpoint at step 2: the ranks disagree (weights_sha256: rank 0 " in results[1]["message"]
    assert not (tmp_path / "run" / "latest.pt").exists()
