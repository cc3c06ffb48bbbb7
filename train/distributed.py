"""Process-group setup for `rsuper train` under torchrun: rank, world size, device, barrier, teardown, and the
collectives the trainer uses to keep ranks in step (data preparation in turns, agreeing on a stop, comparing
every rank's state)."""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class RankDisagreement(RuntimeError):
    """The ranks of one run hold different states (weights, step, config or data) where they must agree."""


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Process group facts (single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.distributed:
            torch.distributed.barrier()

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order; ``[value]`` in a single process."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, value)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one (one small all_reduce)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1 if flag else 0], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def in_turns(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 first, then on the first rank of every other node, then on the remaining ranks.

        For work that writes shared files, such as generating the phantom set or filling the preprocessing
        cache: run on every rank at once, the ranks would write the same files concurrently and read each other's
        half-written ones. Rank 0 alone first covers an output folder shared by all nodes; the first rank of each
        node next covers node-local folders. A rank that fails makes every rank raise, instead of leaving the
        others waiting at a barrier until the process-group timeout.
        """
        if not self.distributed:
            return fn()
        result: T | None = None
        for turn in range(3):
            mine = (0 if self.rank == 0 else 1 if self.local_rank == 0 else 2) == turn
            failure = None
            if mine:
                try:
                    result = fn()
                except Exception as exc:  # noqa: BLE001 - re-raised below, after telling the other ranks
                    failure = exc
            failed = [r for r, f in enumerate(self.all_gather(failure is not None)) if f]
            if failure is not None:
                raise failure
            if failed:
                raise RuntimeError(f"rank(s) {failed} failed while preparing the data (see their output)")
        return result  # type: ignore[return-value]


def setup_distributed(device: str = "auto", timeout_s: float | None = None) -> DistInfo:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU.

    ``timeout_s``: how long a collective waits for the other ranks before failing (torch's default, 30 min for
    gloo and 10 min for NCCL, when None). A rank whose process dies closes its sockets and the others fail at
    once; the timeout bounds the wait for a rank that hangs or a machine that drops off the network.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device: cuda requested but CUDA is not available")
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not torch.distributed.is_initialized():
        kw = {"timeout": datetime.timedelta(seconds=timeout_s)} if timeout_s else {}
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo", **kw)
    return DistInfo(rank, world, local_rank, dev)


def teardown_distributed() -> None:
    """Leave the process group if this process joined one."""
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
