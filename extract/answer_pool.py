"""Answer validation in worker processes, so a client with hundreds of calls in flight is not held by one core.

Validating an answer (JSON → pydantic → sentences, measurements and places read from the report) costs about as
much CPU as the HTTP call that fetched it. In the event loop's thread both compete for one core; here the loop
only does HTTP and hands answers to a pool of processes in batches (the answers that arrived in one turn of the
loop go in one task, so the inter-process cost is paid per batch, not per report). Same function, same result:
`extract.answers.parse_answer` runs in the worker, which also builds the rows the store keeps
(`schemas.tables.payload_rows`), so the writer thread, which shares the loop's interpreter lock, only adds keys.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from extract.answers import AnswerError, parse_answer
from schemas.tables import PayloadRows, payload_rows


def _parse_batch(items: list[tuple[str, str]], answer_model: type) -> list[tuple[bool, Any, Any]]:
    """(ok, the payload's stored rows or error message, warnings) per (answer, report text)."""
    out: list[tuple[bool, Any, Any]] = []
    for answer, report_text in items:
        try:
            payload, warnings = parse_answer(answer, report_text, answer_model)
        except AnswerError as exc:
            out.append((False, str(exc), None))
        else:
            out.append((True, payload_rows(payload), warnings))
    return out


_warm_barrier: Any = None  # a worker's copy of the pool's start barrier (a Barrier passes only at process start)


def _init_worker(parent_pid: int, warm_barrier: Any) -> None:
    global _warm_barrier
    _warm_barrier = warm_barrier
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the run, not the pool, handles it
    # A parent killed with SIGKILL cannot shut the pool down, and a worker waiting for its next batch would wait
    # forever: leave when the parent is gone.
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _exit_with_parent(parent_pid: int, every_s: float = 1.0) -> None:
    while os.getppid() == parent_pid:
        time.sleep(every_s)
    os._exit(0)


def _warm() -> int:
    # Each warm task holds its process until every process has one, so the pool's processes all run (a process that
    # started first would otherwise take every warm task) and `pids` names each of them.
    _warm_barrier.wait(60)
    return os.getpid()  # the reading code is imported with this module, before the first batch


def default_processes(concurrency: int, cpu_count: int | None = None) -> int:
    """Worker processes for a backend with `concurrency` calls in flight: none for a few calls at a time (a local
    model is the limit then, and a pool only adds start-up time), else one per two cores, at least two and at most
    four (on two shared cores, two processes beat one in each of four paired runs, docs/extraction.md)."""
    cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return 0 if concurrency < 32 or cpus < 2 else min(4, max(2, cpus // 2))


class AnswerPool:
    """`await pool.parse(answer, report_text)` validates in a worker process; use as an async context manager.

    Raises `extract.answers.AnswerError` exactly as `parse_answer` does.
    """

    def __init__(self, processes: int, answer_model: type, max_batch: int = 128) -> None:
        if processes < 1:
            raise ValueError(f"processes={processes}: expected at least 1")
        self.processes, self.answer_model, self.max_batch = processes, answer_model, max_batch
        self._executor: ProcessPoolExecutor | None = None
        self._waiting: list[tuple[str, str, asyncio.Future]] = []
        self._busy = 0  # batches in the executor
        self.pids: list[int] = []
        self.tasks = 0  # batches sent: answers per task says whether batching works

    async def __aenter__(self) -> "AnswerPool":
        # spawn, not fork: the client process holds DuckDB and aiohttp threads, which a fork would copy mid-state.
        context = multiprocessing.get_context("spawn")
        self._executor = ProcessPoolExecutor(self.processes, mp_context=context, initializer=_init_worker,
                                             initargs=(os.getpid(), context.Barrier(self.processes)))
        # spawn starts one process per task submitted while none is idle: the warm tasks start all of them
        loop = asyncio.get_running_loop()
        warm = [loop.run_in_executor(self._executor, _warm) for _ in range(self.processes)]
        self.pids = sorted(set(await asyncio.gather(*warm)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, True, cancel_futures=True)
            self._executor = None

    async def parse(self, answer: str, report_text: str) -> tuple[PayloadRows, list[str]]:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((answer, report_text, future))
        if self._busy < self.processes:  # a process is idle: send now; else the batch grows until one is free
            self._flush()
        return await future

    def _flush(self) -> None:
        if not self._waiting:
            return
        batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
        self.tasks += 1
        assert self._executor is not None, "AnswerPool used outside `async with`"
        self._busy += 1
        done = asyncio.wrap_future(self._executor.submit(_parse_batch, [(a, t) for a, t, _ in batch],
                                                         self.answer_model))
        done.add_done_callback(lambda d: self._deliver(batch, d))

    def _deliver(self, batch: list[tuple[str, str, asyncio.Future]], done: asyncio.Future) -> None:
        self._busy -= 1
        if self._executor is not None:
            self._flush()
        if done.cancelled() or done.exception() is not None:
            error = done.exception() if not done.cancelled() else asyncio.CancelledError()
            for *_, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (*_, future), (ok, value, warnings) in zip(batch, done.result()):
            if future.done():  # its caller was cancelled
                continue
            if ok:
                future.set_result((value, warnings))
            else:
                future.set_exception(AnswerError(value))
