"""The extraction engine: pending reports → LLM → validated payloads → DuckDB, resumable and idempotent.

Per report: one call on the happy path; when the answer does not validate, one repair call that sends the
validation errors back; then `failed` with the error kept. Every report taken up ends as `ok`, `repaired` or
`failed`.

Run key: `config_hash` digests the prompt file, the schema version and LLM schema, the model (id, revision,
quantization) and the sampling parameters. `extraction_key` = sha256(report_id, report sha256, config_hash):
a report already stored under a key is never sent again, and a report's rows (extraction, tumors, organ
findings) are written in one transaction, so a killed run loses at most the calls in flight and the results
finished since the last write began (`write_wait_s`, one write and the pause after it). Reports sharing a text
share one LLM call.

The conversion rules are not part of the run key: each extraction records their digest (`CONVERSION_SHA256`),
and a run first converts the answers stored under its key by other rules again (`extract.reconvert`).

The run holds `<db>.extract.lock` (one run per store) but releases the DuckDB file between its writes, so
`rsuper query`, `export` and `ingest` work meanwhile. The next run marks a killed run's row `killed`.

Report text is never logged unless `log_text` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import signal
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from extract.answer_pool import AnswerPool, default_processes
from extract.answers import CONVERSION_SHA256, LENGTH_ERROR, TRANSPORT_ERROR, AnswerError, parse_answer
from extract.backends.base import (
    MAX_REPORT_CHARS,
    Backend,
    BackendError,
    BackendInfo,
    Completion,
    SamplingConfig,
    TransportError,
)
from extract.progress import format_duration, progress_bar
from extract.prompting import Prompt
from extract.reconvert import ReconvertStats, reconvert_store
from schemas.records import SCHEMA_VERSION, ExtractionPayload
from schemas.vocab import EXTENSION_FILES, VOCABULARY_SHA256
from schemas.tables import PayloadRows, extraction_tables, payload_rows

log = logging.getLogger("rsuper.extract")

STATUSES = ("ok", "repaired", "failed")

EXTRACTIONS_SCHEMA = pa.schema([
    pa.field("extraction_key", pa.string(), nullable=False),
    pa.field("run_id", pa.string()),
    pa.field("report_id", pa.string(), nullable=False),
    pa.field("report_version", pa.int32(), nullable=False),
    pa.field("report_sha256", pa.string(), nullable=False),
    pa.field("config_hash", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("attempts", pa.int32()),
    pa.field("error", pa.string()),
    pa.field("raw_output", pa.string()),
    pa.field("payload", pa.string()),
    pa.field("prompt_tokens", pa.int32()),
    pa.field("output_tokens", pa.int32()),
    pa.field("latency_s", pa.float64()),
    pa.field("created_at", pa.timestamp("us")),
    pa.field("conversion_sha256", pa.string()),
])


class EngineConfig(BaseModel):
    """How the engine drives a backend (not part of the run key)."""

    model_config = ConfigDict(extra="forbid")

    limit: Optional[int] = Field(None, ge=1, description="extract at most this many pending reports")
    write_batch: int = Field(4096, ge=1, description="most results per DuckDB transaction")
    write_wait_s: float = Field(1.0, ge=0, description="longest a finished result waits for a fuller batch before "
                                "its write begins (s): a larger transaction costs DuckDB less per report")
    flush_interval_s: float = Field(0.25, gt=0, description="how often an idle writer looks for results, and the "
                                    "least time the store is left to other processes between two writes (s)")
    lock_wait_s: float = Field(600.0, ge=0, description="how long a write waits while another process has the "
                               "store open (s); then the run stops and its unwritten reports stay pending")
    max_report_chars: int = Field(MAX_REPORT_CHARS, ge=100, description="longer reports fail without a call")
    retry_failed: bool = Field(False, description="re-extract reports whose stored result under this key failed")
    reconvert: bool = Field(True, description="first convert again the stored answers under this key that other "
                            "conversion rules made (`extract.reconvert`; no LLM call)")
    log_text: bool = Field(False, description="log report text and model output of failures (PHI!)")
    progress: bool = Field(True, description="a bar on a terminal, a line every progress_interval_s elsewhere")
    progress_interval_s: float = Field(30.0, gt=0, description="seconds between progress lines off a terminal")
    outage_s: float = Field(120.0, gt=0, description="stop when no call has been answered for this long while "
                            "calls fail in transport (s); the reports not extracted stay pending")
    answer_processes: Optional[int] = Field(None, ge=0, description="processes that validate answers beside the "
                                            "event loop (0: in the loop; None: one per two cores, 2 to 4, when "
                                            "the backend keeps 32 or more calls in flight)")


# --------------------------------------------------------------------------------------------------
# Keys (pure)
# --------------------------------------------------------------------------------------------------


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_config(prompt: Prompt, info: BackendInfo, sampling: SamplingConfig) -> dict[str, Any]:
    """Everything that decides a report's answer, as a JSON-able dict (its digest is `config_hash`)."""
    return {
        "prompt_sha256": prompt.sha256,
        "schema_version": SCHEMA_VERSION,
        "llm_schema_sha256": _sha256(json.dumps(prompt.answer_schema(), sort_keys=True)),
        "model_id": info.model_id,
        "model_revision": info.model_revision,
        "quantization": info.quantization,
        "sampling": sampling.model_dump(),
        # Only when set, so the keys of runs without such settings stay what they were.
        **({"decoding": info.decoding} if info.decoding else {}),
        # The code reads the cited sentences with the vocabulary's words: an extension changes answers.
        **({"vocabulary_sha256": VOCABULARY_SHA256} if EXTENSION_FILES else {}),
    }


def config_hash(config: dict[str, Any]) -> str:
    """Digest of a `run_config` dict (canonical JSON)."""
    return _sha256(json.dumps(config, sort_keys=True, separators=(",", ":")))


def extraction_key(report_id: str, report_sha256: str, cfg_hash: str) -> str:
    """The idempotency key of one report under one run configuration.

    The report id is part of it so two ids with the same text each get their own stored result.
    """
    return _sha256(f"{report_id}\x00{report_sha256}\x00{cfg_hash}")


# --------------------------------------------------------------------------------------------------
# One report (pure apart from the backend call)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One report to extract."""

    report_id: str
    report_version: int
    report_sha256: str
    text: str


@dataclass
class Outcome:
    """What happened to one report text.

    A usable answer has `payload` when it was validated in this process, else (an answer process) only `rows`,
    its stored form; `stored_rows()` gives that form either way.
    """

    status: str
    attempts: int
    payload: Optional[ExtractionPayload] = None
    rows: Optional[PayloadRows] = None
    raw_output: str = ""
    error: Optional[str] = None
    warnings: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    calls: int = 0

    def stored_rows(self) -> Optional[PayloadRows]:
        if self.rows is None and self.payload is not None:
            self.rows = payload_rows(self.payload)
        return self.rows


def _add(outcome: Outcome, c: Completion) -> None:
    outcome.calls += 1
    outcome.prompt_tokens += c.prompt_tokens
    outcome.output_tokens += c.output_tokens
    outcome.latency_s += c.latency_s
    outcome.raw_output = c.text


#: `(answer, report text) -> (stored rows, warnings)`, raising AnswerError: `parse_answer` and `payload_rows`
#: elsewhere than in the loop.
AnswerParser = Callable[[str, str], Awaitable[tuple[PayloadRows, list[str]]]]


async def extract_one(backend: Backend, prompt: Prompt, schema: dict[str, Any], sampling: SamplingConfig,
                      text: str, max_report_chars: int = MAX_REPORT_CHARS,
                      parse: AnswerParser | None = None) -> Outcome:
    """Extract one report: a call, and at most one repair call. Never raises for model or transport faults:
    status `pending` when the server did not answer (nothing to store), else ok, repaired or failed. `parse`
    validates the answer (default: `parse_answer` in this thread)."""
    if len(text) > max_report_chars:
        return Outcome("failed", 0, error=f"report has {len(text)} characters, over the {max_report_chars} limit "
                                          "(--max-report-chars; then --retry-failed)")
    outcome = Outcome("failed", 0)
    messages = prompt.messages(text)
    for attempt in (1, 2):
        outcome.attempts = attempt
        try:
            c = await backend.complete(messages, schema, sampling)
        except TransportError as exc:  # says nothing about the report: it stays pending
            outcome.status = "pending"
            outcome.error = f"{TRANSPORT_ERROR}{exc}"
            return outcome
        except BackendError as exc:
            outcome.error = f"{TRANSPORT_ERROR}{exc}" + (f" | {outcome.error}" if outcome.error else "")
            return outcome
        _add(outcome, c)
        if c.finish_reason == "length":
            outcome.error = f"{LENGTH_ERROR}={sampling.max_tokens} (finish_reason=length)"
            return outcome
        try:
            if parse is None:
                outcome.payload, outcome.warnings = parse_answer(c.text, text, prompt.answer_model)
            else:
                outcome.rows, outcome.warnings = await parse(c.text, text)
        except AnswerError as exc:
            outcome.error = f"attempt {attempt}: {exc}" if outcome.error is None else f"{outcome.error} | attempt {attempt}: {exc}"
            messages = prompt.repair_messages(text, c.text, str(exc))
            continue
        outcome.status = "ok" if attempt == 1 else "repaired"
        return outcome
    return outcome


# --------------------------------------------------------------------------------------------------
# Storage of results
# --------------------------------------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def result_tables(rows: list[tuple[Job, Outcome]], run_id: str, cfg_hash: str) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(extractions, tumors, organ_findings) Arrow tables for finished reports."""
    now = _utcnow()
    ext: list[dict[str, Any]] = []
    items = []
    for job, out in rows:
        key = extraction_key(job.report_id, job.report_sha256, cfg_hash)
        stored = out.stored_rows()
        ext.append({
            "extraction_key": key, "run_id": run_id, "report_id": job.report_id,
            "report_version": job.report_version, "report_sha256": job.report_sha256, "config_hash": cfg_hash,
            "status": out.status, "attempts": out.attempts, "error": out.error, "raw_output": out.raw_output,
            "payload": stored.payload_json if stored is not None else None,
            "prompt_tokens": out.prompt_tokens, "output_tokens": out.output_tokens,
            "latency_s": round(out.latency_s, 4), "created_at": now, "conversion_sha256": CONVERSION_SHA256,
        })
        if stored is not None:
            items.append((key, job.report_id, stored))
    tumors, findings = extraction_tables(items)
    return pa.Table.from_pylist(ext, schema=EXTRACTIONS_SCHEMA), tumors, findings


class ResultWriter:
    """Writes finished reports to the store from a worker thread, so calls keep flowing during writes.

    One write at a time, each one transaction holding every result finished since the previous write, up to
    `batch`. A write begins when `batch` results wait or the oldest has waited `wait_s`, and at least `interval_s`
    after the previous write ended: at high rates batches fill, at low rates (the local backend) each result is
    written within `wait_s`.
    """

    def __init__(self, store: Any, run_id: str, cfg_hash: str, batch: int, interval_s: float,
                 wait_s: float = 0.0) -> None:
        self.store, self.run_id, self.cfg_hash, self.batch = store, run_id, cfg_hash, batch
        self.interval_s, self.wait_s = interval_s, wait_s
        self._rows: list[tuple[Job, Outcome]] = []
        self._oldest_t = 0.0  # time.monotonic() when the oldest buffered result arrived
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False
        self.written = 0

    def add(self, job: Job, outcome: Outcome) -> None:
        if not self._rows:
            self._oldest_t = time.monotonic()
        self._rows.append((job, outcome))
        self._wake.set()
        if len(self._rows) >= self.batch:
            self._full.set()

    def _write(self, rows: list[tuple[Job, Outcome]]) -> None:
        try:
            stats = self.store.write_extractions(*result_tables(rows, self.run_id, self.cfg_hash))
        finally:
            self.store.release()  # readers and ingests get the file until the next write
        self.written += stats.written

    async def run(self) -> None:
        """Write until `close()` has been called and nothing is left."""
        while True:
            if not self._rows:
                if self._closing:
                    return
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval_s)
                continue
            wait = self._oldest_t + self.wait_s - time.monotonic()
            if len(self._rows) < self.batch and wait > 0 and not self._closing:
                self._full.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._full.wait(), wait)
                continue
            rows, self._rows = self._rows[: self.batch], self._rows[self.batch:]
            # what is left arrived after the oldest: its time stays a bound, so nothing waits longer than wait_s
            self._full.clear()
            if len(self._rows) >= self.batch:
                self._full.set()
            # Shielded: a cancelled run still finishes the transaction it started.
            await asyncio.shield(asyncio.to_thread(self._write, rows))
            if not self._closing:  # leave the file to other processes for a moment, even when results wait
                await asyncio.sleep(self.interval_s)

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._full.set()

    def write_rest(self) -> None:
        """Synchronously write whatever is still buffered (after the writer task stopped)."""
        while self._rows:
            rows, self._rows = self._rows[: self.batch], self._rows[self.batch:]
            self._write(rows)


def pending_reports(store: Any, cfg_hash: str, limit: int | None = None) -> list[Job]:
    """Latest report versions with no stored extraction under `cfg_hash`, ordered by report id, as jobs
    (`Store.pending_reports`: a stored row of any status counts as done, so re-running never calls the LLM
    for it again)."""
    return [Job(rid, version, sha, text) for rid, version, sha, text in store.pending_reports(cfg_hash, limit)]


# --------------------------------------------------------------------------------------------------
# A run
# --------------------------------------------------------------------------------------------------


@dataclass
class RunStats:
    """Counts and timings of one run."""

    run_id: str
    config_hash: str
    pending: int = 0
    ok: int = 0
    repaired: int = 0
    failed: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    wall_s: float = 0.0
    interrupted: bool = False
    left_pending: int = 0  # not extracted: the server did not answer, or the run stopped at an outage
    unanswered: int = 0  # report calls that ended in transport errors (after the backend's retries)
    outage: Optional[str] = None
    killed_runs: list[str] = field(default_factory=list)  # earlier runs found unfinished, now marked killed
    failed_in_store: int = 0  # reports whose result under this key is failed, from this run or an earlier one
    answer_processes: int = 0  # processes that validated answers beside the event loop
    answer_tasks: int = 0  # batches of answers those processes were sent
    reconverted: ReconvertStats = field(default_factory=ReconvertStats)  # stored answers converted again first

    @property
    def done(self) -> int:
        return self.ok + self.repaired + self.failed

    @property
    def outcome(self) -> str:
        """How the run ended, most pressing first (`extraction_runs.outcome`; `exit_code` follows it)."""
        if self.interrupted:
            return "interrupted"
        if self.outage:
            return "outage"
        if self.left_pending:
            return "left_pending"
        return "failed_reports" if self.failed else "done"

    def summary(self) -> dict[str, Any]:
        def per_report(value: int, digits: int) -> float | None:  # None, not 0.0, when no report was answered
            return round(value / self.done, digits) if self.done else None

        return {
            "run_id": self.run_id, "config_hash": self.config_hash[:16], "pending": self.pending,
            "ok": self.ok, "repaired": self.repaired, "failed": self.failed, "outcome": self.outcome,
            "interrupted": self.interrupted, "left_pending": self.left_pending, "outage": self.outage,
            "llm_calls": self.calls, "unanswered_calls": self.unanswered,
            "calls_per_report": per_report(self.calls, 3),
            "reports_per_s": round(self.done / self.wall_s, 3) if self.wall_s > 0 else None,
            "prompt_tokens_per_report": per_report(self.prompt_tokens, 1),
            "output_tokens_per_report": per_report(self.output_tokens, 1),
            "wall_s": round(self.wall_s, 2), "killed_runs": self.killed_runs, "failed_in_store": self.failed_in_store,
            "answer_processes": self.answer_processes, **self.reconverted.summary(),
        }


#: Exit codes of `rsuper extract` after a run, for schedulers (1: an error before the run, 2: a bad option).
EXIT_FAILED_REPORTS = 3  # every report has an answer, some unusable (failed, in this run or an earlier one)
EXIT_LEFT_PENDING = 4  # the server did not answer for some reports, or the run stopped at an outage
EXIT_INTERRUPTED = 5  # SIGINT / SIGTERM


_EXIT_CODES = {"done": 0, "failed_reports": EXIT_FAILED_REPORTS, "left_pending": EXIT_LEFT_PENDING,
               "outage": EXIT_LEFT_PENDING, "interrupted": EXIT_INTERRUPTED}


def exit_code(summary: dict[str, Any]) -> int:
    """0 when every report has a usable result under the run key, else the code of the run's `outcome`; a run
    that had nothing left to do still exits 3 while failed results are stored (`--retry-failed` retries them)."""
    code = _EXIT_CODES[summary["outcome"]]
    return EXIT_FAILED_REPORTS if code == 0 and summary["failed_in_store"] else code


def rsuper_version() -> str:
    """The installed rsuper's version, for run provenance."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rsuper")
    except PackageNotFoundError:
        return "unknown"


def run_row(run_id: str, cfg_hash: str, info: BackendInfo, prompt: Prompt, sampling: SamplingConfig,
            backend_label: str | None = None, versions: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `extraction_runs` row a run starts with: its key and provenance (`backend_label` replaces the
    backend's name, `versions` adds entries to the versions JSON)."""
    return {
        "run_id": run_id, "config_hash": cfg_hash, "backend": backend_label or info.backend,
        "model_id": info.model_id, "model_revision": info.model_revision, "quantization": info.quantization,
        "prompt_id": prompt.label, "prompt_sha256": prompt.sha256, "schema_version": SCHEMA_VERSION,
        "sampling": json.dumps(sampling.model_dump()),
        "versions": json.dumps({"rsuper": rsuper_version(), "conversion_sha256": CONVERSION_SHA256,
                                "backend": info.backend_version,
                                "structured_output": info.structured_output, **(versions or {}), **info.extra}),
        "started_at": _utcnow(),
    }


def _drain(queue: asyncio.Queue) -> list:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def run_extraction(store: Any, backend: Backend, prompt: Prompt, sampling: SamplingConfig,
                         config: EngineConfig | None = None,
                         on_result: Callable[[Job, Outcome], None] | None = None) -> RunStats:
    """Extract every pending report of `store` with `backend`; see the module docstring.

    Args:
        store: an open, writable `extract.store.Store`.
        backend: a `Backend` (not yet started; closed on return).
        prompt: the loaded prompt template.
        sampling: decoding parameters (part of the run key).
        config: engine settings.
        on_result: called after each finished report (tests, progress hooks).
    """
    config = config or EngineConfig()
    store.wait_s = max(store.wait_s, config.lock_wait_s)  # each write reopens the file: wait for readers
    with store.job_lock("extract"):
        killed = store.close_killed_runs()  # no run can be alive while we hold the lock
        info = await backend.start()
        try:
            stats = await _run(store, backend, info, prompt, sampling, config, on_result)
        finally:
            await backend.aclose()
    stats.killed_runs = killed
    return stats


def start_run(store: Any, prompt: Prompt, info: BackendInfo, sampling: SamplingConfig,
              config: EngineConfig) -> RunStats:
    """A new run's id and key (from the backend's provenance), with the failures to retry retired under it and
    the answers stored under it converted by the rules in force; the same for the direct and the Ray engine."""
    cfg_hash = config_hash(run_config(prompt, info, sampling))
    run_id = f"{_utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    stats = RunStats(run_id=run_id, config_hash=cfg_hash)
    if config.reconvert:
        stats.reconverted = reconvert_store(store, cfg_hash, progress=config.progress,
                                            interval_s=config.progress_interval_s)
    if config.retry_failed:  # after the conversion, which may fail answers the rules in force reject
        store.retire_failed(cfg_hash, run_id)
    return stats


async def _run(store: Any, backend: Backend, info: BackendInfo, prompt: Prompt, sampling: SamplingConfig,
               config: EngineConfig, on_result: Callable[[Job, Outcome], None] | None) -> RunStats:
    stats = start_run(store, prompt, info, sampling, config)
    run_id, cfg_hash = stats.run_id, stats.config_hash
    jobs = pending_reports(store, cfg_hash, config.limit)
    stats.pending = len(jobs)
    store.record_run(run_row(run_id, cfg_hash, info, prompt, sampling))
    if not jobs:
        store.finish_run(run_id, n_ok=0, n_repaired=0, n_failed=0)
        stats.failed_in_store = store.count_failed(cfg_hash)
        return stats
    store.release()

    # One call per distinct text: ids sharing a text wait on the same task.
    by_text: dict[str, list[Job]] = {}
    for job in jobs:
        by_text.setdefault(job.report_sha256, []).append(job)
    queue: asyncio.Queue[list[Job]] = asyncio.Queue()
    for group in by_text.values():
        queue.put_nowait(group)

    schema = prompt.answer_schema()
    writer = ResultWriter(store, run_id, cfg_hash, config.write_batch, config.flush_interval_s, config.write_wait_s)
    bar = progress_bar(len(jobs), config.progress, config.progress_interval_s)
    t0 = time.perf_counter()

    # Circuit breaker: a run whose calls all fail in transport for `outage_s` stops, leaving the rest pending.
    last_answer_t = t0
    stop = asyncio.Event()

    def finish(group: list[Job], out: Outcome) -> None:
        nonlocal last_answer_t
        stats.calls += out.calls
        stats.prompt_tokens += out.prompt_tokens
        stats.output_tokens += out.output_tokens
        bar.update(len(group))
        now = time.perf_counter()
        if out.status == "pending":
            stats.left_pending += len(group)
            stats.unanswered += 1
            if now - last_answer_t >= config.outage_s and not stop.is_set():
                since = datetime.now(timezone.utc) - timedelta(seconds=now - last_answer_t)
                stats.outage = (f"no answer for {format_duration(now - last_answer_t)}, since {since:%H:%M:%S} UTC "
                                f"({(out.error or '').removeprefix(TRANSPORT_ERROR)})")
                log.warning("stopping: %s", stats.outage)
                stop.set()
            return
        last_answer_t = now
        for job in group:
            setattr(stats, out.status, getattr(stats, out.status) + 1)
            writer.add(job, out)
            if on_result is not None:
                on_result(job, out)
        if out.status == "failed":
            # The last attempt's kind ("attempt 2", "output reached max_tokens..."), without answer text.
            detail = f": {out.error}" if config.log_text else f" ({(out.error or '').split(' | ')[-1].split(':')[0]})"
            log.warning("report %s failed%s", group[0].report_id, detail)
            if config.log_text:
                log.warning("report text: %s\nmodel output: %s", group[0].text, out.raw_output)

    n_workers = max(1, min(backend.max_concurrency, len(by_text)))
    processes = config.answer_processes
    if processes is None:
        processes = default_processes(n_workers)
    pool = AnswerPool(processes, prompt.answer_model) if processes else None
    if pool is not None:
        await pool.__aenter__()
        stats.answer_processes = len(pool.pids)
    parse = pool.parse if pool is not None else None

    async def worker() -> None:
        while not stop.is_set():
            try:
                group = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            out = await extract_one(backend, prompt, schema, sampling, group[0].text, config.max_report_chars,
                                    parse)
            finish(group, out)

    workers = asyncio.gather(*(worker() for _ in range(n_workers)))
    write_task = asyncio.create_task(writer.run())
    # A write that fails (the file held by another process past lock_wait_s) stops the calls at once.
    write_task.add_done_callback(lambda t: t.cancelled() or t.exception() is None or stop.set())
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, workers.cancel)
    try:
        await workers
    except asyncio.CancelledError:
        stats.interrupted = True
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
        if pool is not None:
            await pool.__aexit__(None, None, None)
            stats.answer_tasks = pool.tasks
        writer.close()
        try:
            await write_task
        except asyncio.CancelledError:  # interrupted while writing: the shielded write still completes
            pass
        writer.write_rest()
        stats.left_pending += sum(len(group) for group in _drain(queue))
        bar.close()
        stats.wall_s = time.perf_counter() - t0
        store.finish_run(run_id, n_ok=stats.ok, n_repaired=stats.repaired, n_failed=stats.failed,
                         outcome=stats.outcome, n_left_pending=stats.left_pending)
        stats.failed_in_store = store.count_failed(cfg_hash)
    return stats


def run_extract(db: Optional[Path], backend: Backend, *, prompt_path: Optional[Path], sampling: SamplingConfig,
                limit: Optional[int], retry_failed: bool, log_text: bool, progress: bool,
                outage_s: float = EngineConfig.model_fields["outage_s"].default,
                max_report_chars: int = EngineConfig.model_fields["max_report_chars"].default,
                answer_processes: Optional[int] = None, reconvert: bool = True) -> dict[str, Any]:
    """Open the store `db` (None: the default store), run the engine, return the run summary."""
    from extract.prompting import DEFAULT_PROMPT, load_prompt
    from extract.store import Store

    prompt = load_prompt(prompt_path or DEFAULT_PROMPT)
    config = EngineConfig(limit=limit, retry_failed=retry_failed, log_text=log_text, progress=progress,
                          outage_s=outage_s, max_report_chars=max_report_chars, answer_processes=answer_processes,
                          reconvert=reconvert)
    with Store(db, wait_s=config.lock_wait_s) as store:  # the first open waits too
        stats = asyncio.run(run_extraction(store, backend, prompt, sampling, config))
    return stats.summary()
