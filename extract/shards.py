"""Result shards: finished reports of a distributed run as Parquet, and the one loader that merges them into the store.

A worker of `rsuper extract --engine ray` never opens DuckDB (one process may write the file). It writes each block
of finished reports as one shard directory::

    <shard root>/<run_id>/<shard_id>/extractions.parquet   rows of the `extractions` table
                                    /tumors.parquet        rows of `tumors`
                                    /organ_findings.parquet
                                    /manifest.json         counts, provenance (run key, worker host:pid, time)

The rows are the ones a direct run stores (`extract.engine.result_tables`, the same prompt, schema and conversion).
A shard is written under a hidden temporary name and renamed when complete, so a worker killed mid-write leaves
no shard, only a temporary folder that the next run removes. `shard_id` digests the extraction keys it holds: a
block retried after its worker died writes the same id, and finding it there already is success.

`load_shards` merges finished shards in batches, each batch one transaction that also records the shards in
`extraction_shards`: a shard is loaded once, a shard loaded twice changes nothing (the extraction keys are
idempotent too), and a loader killed mid-way loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from extract.store.errors import StoreError

SHARD_TABLES = ("extractions", "tumors", "organ_findings")
MANIFEST = "manifest.json"
_TMP_PREFIX = ".tmp-"


def shard_id(extraction_keys: Iterable[str]) -> str:
    """Content id of a shard: the digest of its sorted extraction keys (the same block gives the same id)."""
    digest = hashlib.sha256()
    for key in sorted(extraction_keys):
        digest.update(key.encode("ascii"))
    return digest.hexdigest()[:24]


def default_shard_root(db_path: Path) -> Path:
    """Where shards of the store `db_path` go unless told: `<db>.shards/` beside it."""
    return db_path.with_name(db_path.name + ".shards")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def write_shard(root: Path, run_id: str, extractions: pa.Table, tumors: pa.Table, organ_findings: pa.Table,
                provenance: dict[str, Any]) -> tuple[str, bool]:
    """Write one shard of finished reports atomically; return (shard_id, written).

    `written` is False when a shard with this id is already there (a retried block): its content is the same rows.
    """
    sid = shard_id(extractions.column("extraction_key").to_pylist())
    run_dir = Path(root) / run_id
    final = run_dir / sid
    if (final / MANIFEST).exists():
        return sid, False
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f"{_TMP_PREFIX}{sid}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name, table in zip(SHARD_TABLES, (extractions, tumors, organ_findings)):
            pq.write_table(table, tmp / f"{name}.parquet", compression="zstd")
        manifest = {"shard_id": sid, "run_id": run_id, "n_extractions": extractions.num_rows,
                    "n_tumors": tumors.num_rows, "n_organ_findings": organ_findings.num_rows,
                    "worker": f"{socket.gethostname()}:{os.getpid()}", "written_at": _utcnow().isoformat(),
                    **provenance}
        (tmp / MANIFEST).write_text(json.dumps(manifest, sort_keys=True))
        try:
            os.rename(tmp, final)
        except OSError:
            if (final / MANIFEST).exists():  # another attempt of the same block finished first
                shutil.rmtree(tmp, ignore_errors=True)
                return sid, False
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sid, True


def finished_shards(root: Path, run_id: str | None = None) -> list[Path]:
    """Shard directories under `root` (of one run, or of all), in name order; temporary ones are not shards."""
    root = Path(root)
    runs = [root / run_id] if run_id is not None else sorted(p for p in root.iterdir() if p.is_dir()) \
        if root.is_dir() else []
    return [d for run in runs if run.is_dir() for d in sorted(run.iterdir())
            if not d.name.startswith(_TMP_PREFIX) and (d / MANIFEST).is_file()]


def remove_partial(root: Path) -> int:
    """Delete the temporary folders of workers that died mid-write; call it only while no run is alive (under the
    store's extract lock). Returns how many were removed."""
    root = Path(root)
    if not root.is_dir():
        return 0
    partial = [d for run in root.iterdir() if run.is_dir() for d in run.iterdir()
               if d.is_dir() and d.name.startswith(_TMP_PREFIX)]
    for d in partial:
        shutil.rmtree(d, ignore_errors=True)
    return len(partial)


@dataclass
class LoadStats:
    """What one `load_shards` call did."""

    shards_found: int = 0
    shards_loaded: int = 0  # newly recorded in extraction_shards
    extractions_read: int = 0
    extractions_written: int = 0  # new to the store (a report stored already, e.g. by a direct run, is skipped)
    wall_s: float = 0.0


def _read_shard(path: Path) -> tuple[dict[str, Any], list[pa.Table]]:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        tables = [pq.read_table(path / f"{name}.parquet") for name in SHARD_TABLES]
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise StoreError(f"{path}: unreadable result shard ({exc}); move it away and run again to extract its "
                         "reports anew") from exc
    if tables[0].num_rows != manifest.get("n_extractions"):
        raise StoreError(f"{path / 'extractions.parquet'}: {tables[0].num_rows} rows, the manifest says "
                         f"{manifest.get('n_extractions')}")
    return manifest, tables


def load_shards(store: Any, root: Path, run_id: str | None = None, batch_reports: int = 100_000) -> LoadStats:
    """Merge the finished shards under `root` (of `run_id`, or of every run) that the store has not recorded.

    Each transaction takes whole shards up to about `batch_reports` extractions; `Store.write_extractions` skips
    extraction keys already stored, so no row is ever stored twice.

    Raises:
        StoreError: a shard that cannot be read, or whose rows break the store's rules (the file is named;
            nothing of its batch is stored).
    """
    t0 = time.perf_counter()
    stats = LoadStats()
    shards = finished_shards(root, run_id)
    stats.shards_found = len(shards)
    loaded = store.loaded_shards()
    todo = [p for p in shards if p.name not in loaded]
    batch: list[tuple[Path, dict[str, Any], list[pa.Table]]] = []

    def flush() -> None:
        if not batch:
            return
        ext, tum, org = (pa.concat_tables([tables[i] for _, _, tables in batch]) for i in range(3))
        now = _utcnow()
        shard_rows = pa.Table.from_pylist([
            {"shard_id": m["shard_id"], "run_id": m["run_id"], "path": str(p), "n_extractions": m["n_extractions"],
             "n_tumors": m["n_tumors"], "worker": m.get("worker"),
             "written_at": datetime.fromisoformat(m["written_at"]), "loaded_at": now} for p, m, _ in batch])
        try:
            write = store.write_extractions(ext, tum, org, shards=shard_rows)
        except StoreError as exc:
            names = ", ".join(str(p) for p, _, _ in batch[:3]) + (" ..." if len(batch) > 3 else "")
            raise StoreError(f"result shards {names}: {exc}") from exc
        stats.shards_loaded += len(batch)
        stats.extractions_read += ext.num_rows
        stats.extractions_written += write.written
        batch.clear()

    n_batch = 0
    for path in todo:
        manifest, tables = _read_shard(path)
        if manifest.get("shard_id") != path.name:
            raise StoreError(f"{path / MANIFEST}: shard_id {manifest.get('shard_id')!r} is not the folder's name")
        batch.append((path, manifest, tables))
        n_batch += tables[0].num_rows
        if n_batch >= batch_reports:
            flush()
            n_batch = 0
    flush()
    stats.wall_s = time.perf_counter() - t0
    return stats
