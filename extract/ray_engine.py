"""`rsuper extract --engine ray`: pending reports through Ray Data, one LLM replica per worker, results as shards.

The driver (this process) holds the store's extract lock for the whole run and is the only process that opens
DuckDB. It
1. marks earlier unfinished runs `killed`, removes half-written shard folders and merges the finished shards of
   earlier runs (`extract.shards.load_shards`): a killed run resumes from what its workers had written;
2. asks one worker-shaped Ray task for the backend's provenance, so the run key is the one the workers compute
   (each worker checks it again and refuses to run under another key);
3. writes the pending reports, one row per distinct text, as Parquet input files of one block each (streamed out of
   DuckDB, so the driver never holds all the texts);
4. runs `from_items(input files) → map_batches(ExtractBlock)`, one file per Ray block: an actor pool of `workers`
   replicas, each reading its blocks' files from the shared shard folder and with its own backend
   (the embedded llama.cpp model, an OpenAI-compatible server such as `vllm serve`, or in-process vLLM on a GPU),
   each block extracted with the same prompt, schema and conversion as a direct run (`extract.engine.extract_one`,
   `result_tables`) and written as one shard;
5. merges finished shards into the store every `load_every_s` while the run goes on (the file is released between
   merges, so `rsuper query` works), and the rest at the end.

Reports whose calls got no answer (transport errors) are in no shard and stay pending for the next run. Ray retries
a block whose worker died, and restarts the worker; a block written twice has the same shard id and is loaded once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from extract.backends.base import Backend, BackendInfo, SamplingConfig
from extract.engine import (
    EngineConfig,
    Job,
    RunStats,
    config_hash,
    extract_one,
    result_tables,
    run_config,
    run_row,
    start_run,
)
from extract.progress import format_duration, progress_bar
from extract.prompting import Prompt
from extract.shards import default_shard_root, load_shards, remove_partial, write_shard
from schemas.records import SCHEMA_VERSION
from schemas.organ_tables import VOCABULARY_ENV

log = logging.getLogger("rsuper.extract")

#: A picklable callable that builds a backend (not started) in a worker, e.g. `functools.partial(build_backend,
#: ...)`: each worker builds its own replica.
BackendFactory = Callable[[], Backend]


class RayConfig(BaseModel):
    """How a Ray run is laid out (not part of the run key)."""

    model_config = ConfigDict(extra="forbid")

    address: Optional[str] = Field(None, description="Ray cluster address ('auto': the running cluster); None: "
                                   "start a local one on this machine")
    workers: int = Field(2, ge=1, description="LLM replicas (Ray actors), e.g. one per GPU or tensor-parallel group")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each replica reserves")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs each replica reserves (vLLM: tensor_parallel_size)")
    block_reports: int = Field(256, ge=1, description="distinct report texts per block, and so per shard")
    shard_dir: Optional[Path] = Field(None, description="where shards go (default: <db>.shards beside the store)")
    load_every_s: float = Field(30.0, gt=0, description="how often finished shards are merged into the store (s)")
    local_object_store_mb: int = Field(1024, ge=128, description="object store of a local cluster (MiB)")


# --------------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------------


def _memory_mb() -> tuple[float, float]:
    """(resident, private) memory of this process in MiB (Linux /proc, else zeros). Private leaves out shared pages:
    a Ray worker reads its blocks from the object store's shared memory, which `resident` counts as they are
    touched, so only `private` says whether the worker itself grows."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
        page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        return int(fields[1]) * page_mb, (int(fields[1]) - int(fields[2])) * page_mb
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0


MANIFEST_SCHEMA = pa.schema([
    ("shard_id", pa.string()), ("written", pa.bool_()), ("texts", pa.int64()), ("reports", pa.int64()),
    ("ok", pa.int64()), ("repaired", pa.int64()), ("failed", pa.int64()), ("pending", pa.int64()),
    ("calls", pa.int64()), ("prompt_tokens", pa.int64()), ("output_tokens", pa.int64()),
    ("worker_pid", pa.int64()), ("worker_rss_mb", pa.float64()), ("worker_private_mb", pa.float64()),
    ("worker_blocks", pa.int64()),
])


class ExtractBlock:
    """A Ray Data callable class: one backend replica; each call extracts a block of distinct texts and writes it
    as one shard, returning a one-row manifest (counts, tokens, this worker's pid and resident memory)."""

    def __init__(self, backend_factory: BackendFactory, prompt: Prompt, sampling: SamplingConfig, cfg_hash: str,
                 run_id: str, shard_root: str, max_report_chars: int) -> None:
        self.prompt, self.sampling, self.cfg_hash, self.run_id = prompt, sampling, cfg_hash, run_id
        self.shard_root, self.max_report_chars = Path(shard_root), max_report_chars
        self.schema = prompt.answer_schema()
        self.loop = asyncio.new_event_loop()
        self.backend = backend_factory()
        info = self.loop.run_until_complete(self.backend.start())
        got = config_hash(run_config(prompt, info, sampling))
        if got != cfg_hash:  # a replica serving another model or build would mix two run keys in one run
            raise RuntimeError(f"this worker's backend gives run key {got[:16]}, the run's is {cfg_hash[:16]} "
                               f"(model {info.model_id!r} {info.model_revision!r}); every replica must serve the "
                               "same model")
        self.info = info
        self.blocks = 0

    async def _extract(self, texts: list[str]) -> list[Any]:
        limit = asyncio.Semaphore(max(1, self.backend.max_concurrency))

        async def one(text: str) -> Any:
            async with limit:
                return await extract_one(self.backend, self.prompt, self.schema, self.sampling, text,
                                         self.max_report_chars)

        return await asyncio.gather(*(one(t) for t in texts))

    def __call__(self, inputs: pa.Table) -> pa.Table:
        """One manifest row per input file named in `inputs` (column `input`)."""
        import pyarrow.parquet as pq

        return pa.concat_tables([self._block(pq.read_table(path)) for path in inputs.column("input").to_pylist()])

    def _block(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("text").to_pylist()
        outcomes = self.loop.run_until_complete(self._extract(texts))
        rows = []
        counts = dict.fromkeys(("ok", "repaired", "failed", "pending", "calls", "prompt_tokens", "output_tokens"), 0)
        for sha, text, ids, versions, out in zip(batch.column("report_sha256").to_pylist(), texts,
                                                 batch.column("report_ids").to_pylist(),
                                                 batch.column("report_versions").to_pylist(), outcomes):
            counts["calls"] += out.calls
            counts["prompt_tokens"] += out.prompt_tokens
            counts["output_tokens"] += out.output_tokens
            counts[out.status] += len(ids)
            if out.status != "pending":  # no answer came: nothing to store, the reports stay pending
                rows.extend((Job(rid, version, sha, text), out) for rid, version in zip(ids, versions))
        sid, written = "", False
        self.blocks += 1
        rss_mb, private_mb = (round(m, 1) for m in _memory_mb())
        if rows:
            tables = result_tables(rows, self.run_id, self.cfg_hash)
            sid, written = write_shard(self.shard_root, self.run_id, *tables, provenance={
                "config_hash": self.cfg_hash, "schema_version": SCHEMA_VERSION, "prompt_sha256": self.prompt.sha256,
                "backend": self.info.backend, "backend_version": self.info.backend_version,
                "model_id": self.info.model_id, "model_revision": self.info.model_revision,
                "worker_rss_mb": rss_mb, "worker_private_mb": private_mb, "worker_blocks": self.blocks})
        return pa.Table.from_pylist([{
            "shard_id": sid, "written": written, "texts": len(texts), "reports": sum(len(i) for i in
                                                                                      batch.column("report_ids").to_pylist()),
            **counts, "worker_pid": os.getpid(), "worker_rss_mb": rss_mb, "worker_private_mb": private_mb,
            "worker_blocks": self.blocks,
        }], schema=MANIFEST_SCHEMA)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.backend.aclose())
            self.loop.close()


def _probe(backend_factory: BackendFactory) -> BackendInfo:
    """The provenance of the backend a worker builds (started once and closed)."""
    async def go() -> BackendInfo:
        backend = backend_factory()
        info = await backend.start()
        await backend.aclose()
        return info

    return asyncio.run(go())


# --------------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------------


def _write_inputs(store: Any, cfg_hash: str, limit: Optional[int], out_dir: Path,
                  texts_per_file: int) -> int:
    """Pending reports under `cfg_hash`, grouped by text (one call per distinct text), as Parquet files in
    `out_dir` of `texts_per_file` texts each (one file per block: Ray Data reads each file as one input, so every
    worker gets blocks even in a small run); returns the number of reports."""
    import pyarrow.parquet as pq

    out_dir.mkdir(parents=True)
    limit_sql = f"LIMIT {int(limit)}" if limit is not None else ""
    pending = f"""SELECT r.report_id, r.version, r.sha256, r.text FROM latest_reports r
                  WHERE NOT EXISTS (SELECT 1 FROM extractions e WHERE e.config_hash = {_sql(cfg_hash)}
                                    AND e.report_id = r.report_id AND e.report_sha256 = r.sha256)
                  ORDER BY r.report_id {limit_sql}"""
    con = store.con
    n = con.execute(f"SELECT count(*) FROM ({pending})").fetchall()[0][0]
    if not n:
        return 0
    reader = con.sql(f"""SELECT sha256 AS report_sha256, any_value(text) AS text,
                                    list(report_id ORDER BY report_id) AS report_ids,
                                    list(version ORDER BY report_id) AS report_versions
                             FROM ({pending}) GROUP BY sha256 ORDER BY min(report_id)""").to_arrow_reader(
        texts_per_file)
    buffered: list[pa.RecordBatch] = []
    rows, files = 0, 0

    def flush(count: int) -> None:
        nonlocal buffered, rows, files
        table = pa.Table.from_batches(buffered)
        pq.write_table(table.slice(0, count), out_dir / f"{files:06d}.parquet")
        rest = table.slice(count)
        buffered, rows, files = rest.to_batches(), rest.num_rows, files + 1

    for batch in reader:
        buffered.append(batch)
        rows += batch.num_rows
        while rows >= texts_per_file:
            flush(texts_per_file)
    if rows:
        flush(rows)
    return int(n)


def _sql(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _init_ray(config: RayConfig) -> bool:
    """Connect to or start Ray; True when this call started it (and so shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"address": config.address, "include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
    if config.address is None:
        kwargs["object_store_memory"] = config.local_object_store_mb * 2**20
    if os.environ.get(VOCABULARY_ENV):  # the workers read the same organ tables (a path every node can read)
        kwargs["runtime_env"] = {"env_vars": {VOCABULARY_ENV: os.environ[VOCABULARY_ENV]}}
    ray.init(**kwargs)
    return True


def run_ray_extraction(store: Any, backend_factory: BackendFactory, prompt: Prompt, sampling: SamplingConfig,
                       config: EngineConfig | None = None, ray_config: RayConfig | None = None) -> RunStats:
    """Extract every pending report of the open, writable `store` on Ray; see the module docstring."""
    import ray

    config = config or EngineConfig()
    ray_config = ray_config or RayConfig()
    shard_root = Path(ray_config.shard_dir or default_shard_root(Path(store.path))).resolve()
    store.wait_s = max(store.wait_s, config.lock_wait_s)
    with store.job_lock("extract"):
        killed = store.close_killed_runs()
        remove_partial(shard_root)
        load_shards(store, shard_root)  # what killed runs' workers wrote becomes rows before pending is read
        store.release()
        started_ray = _init_ray(ray_config)
        try:
            stats = _run(store, backend_factory, prompt, sampling, config, ray_config, shard_root)
        finally:
            if started_ray:
                ray.shutdown()
    stats.killed_runs = killed
    return stats


def _run(store: Any, backend_factory: BackendFactory, prompt: Prompt, sampling: SamplingConfig,
         config: EngineConfig, ray_config: RayConfig, shard_root: Path) -> RunStats:
    import ray
    import ray.data

    resources = {"num_cpus": ray_config.cpus_per_worker, "num_gpus": ray_config.gpus_per_worker}
    cluster_cpus = ray.cluster_resources().get("CPU", 0)
    if ray_config.workers * ray_config.cpus_per_worker >= cluster_cpus:
        # The replicas would hold every CPU and the Parquet read task could never start.
        raise ValueError(f"{ray_config.workers} workers x {ray_config.cpus_per_worker} CPUs leave none of the "
                         f"cluster's {cluster_cpus:g} CPUs to read the input; lower --ray-cpus-per-worker")
    ray.data.DataContext.get_current().enable_progress_bars = False  # our bar counts reports, not blocks
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    info = ray.get(ray.remote(_probe).options(**resources).remote(backend_factory))
    stats = start_run(store, prompt, info, sampling, config)
    run_id, cfg_hash = stats.run_id, stats.config_hash
    input_dir = shard_root / run_id / ".inputs"
    stats.pending = _write_inputs(store, cfg_hash, config.limit, input_dir, ray_config.block_reports)
    store.record_run(run_row(run_id, cfg_hash, info, prompt, sampling, backend_label=f"ray+{info.backend}",
                             versions={"ray": ray.__version__, "workers": ray_config.workers,
                                       "block_reports": ray_config.block_reports}))
    store.release()
    bar = progress_bar(stats.pending, config.progress, config.progress_interval_s)
    t0 = time.perf_counter()
    last_load = t0
    interrupted = False
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread: SIGTERM stays as it was
        signal.signal(signal.SIGTERM, on_term)
    try:
        if stats.pending:
            # One Ray block per input file: read_parquet hands a few small files to the actor pool as one input,
            # which then keeps every block on one replica.
            files = [{"input": str(f)} for f in sorted(input_dir.glob("*.parquet"))]
            ds = ray.data.from_items(files, override_num_blocks=len(files)).map_batches(
                ExtractBlock, batch_size=1, batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=ray_config.workers), fn_constructor_kwargs={
                    "backend_factory": backend_factory, "prompt": prompt, "sampling": sampling,
                    "cfg_hash": cfg_hash, "run_id": run_id, "shard_root": str(shard_root),
                    "max_report_chars": config.max_report_chars}, **resources)
            last_answer_t = t0
            for manifest in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                now = time.perf_counter()
                for row in manifest.to_pylist():
                    for name in ("ok", "repaired", "failed", "calls", "prompt_tokens", "output_tokens"):
                        setattr(stats, name, getattr(stats, name) + row[name])
                    stats.left_pending += row["pending"]
                    stats.unanswered += row["pending"] and 1
                    bar.update(row["reports"])
                    if row["pending"] < row["reports"]:
                        last_answer_t = now
                if now - last_answer_t >= config.outage_s:  # every block since then came back unanswered
                    stats.outage = (f"no block answered for {format_duration(now - last_answer_t)} (every call "
                                    "failed in transport after the backend's retries)")
                    log.warning("stopping: %s", stats.outage)
                    break
                if now - last_load >= ray_config.load_every_s:
                    load_shards(store, shard_root, run_id)
                    store.release()
                    last_load = time.perf_counter()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)
        bar.close()
        load_shards(store, shard_root, run_id)
        shutil.rmtree(input_dir, ignore_errors=True)
        stats.interrupted = interrupted
        stats.wall_s = time.perf_counter() - t0
        # From the store, not the manifests: a block written just before an interrupt is stored but never reported.
        stored = dict(store.con.execute("SELECT status, count(*) FROM extractions WHERE run_id = $run GROUP BY status",
                                        {"run": run_id}).fetchall())
        stats.ok, stats.repaired, stats.failed = (int(stored.get(s, 0)) for s in ("ok", "repaired", "failed"))
        if interrupted or stats.outage:
            stats.left_pending = stats.pending - stats.done
        store.finish_run(run_id, n_ok=stats.ok, n_repaired=stats.repaired, n_failed=stats.failed,
                         outcome=stats.outcome, n_left_pending=stats.left_pending)
        stats.failed_in_store = store.count_failed(cfg_hash)
    return stats


def run_ray_extract(db: Optional[Path], backend_factory: BackendFactory, *, prompt_path: Optional[Path],
                    sampling: SamplingConfig, config: EngineConfig, ray_config: RayConfig) -> dict[str, Any]:
    """Open the store `db` (None: the default store), run on Ray, return the run summary."""
    from extract.prompting import DEFAULT_PROMPT, load_prompt
    from extract.store import Store

    prompt = load_prompt(prompt_path or DEFAULT_PROMPT)
    with Store(db, wait_s=config.lock_wait_s) as store:
        stats = run_ray_extraction(store, backend_factory, prompt, sampling, config, ray_config)
    return stats.summary()
