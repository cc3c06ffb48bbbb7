"""Store errors, and the translation of DuckDB errors into them (naming the file and what to do)."""

from __future__ import annotations

from pathlib import Path

import duckdb


class StoreError(RuntimeError):
    """A store operation failed; the message names the database file and what to do."""


class StoreLockedError(StoreError):
    """Another process holds the DuckDB write lock on the file."""


class StoreReadOnlyError(StoreError):
    """A write was attempted on a store opened read-only, or the file cannot be written."""


def translate(exc: duckdb.Error, path: Path) -> StoreError:
    """A DuckDB error turned into a store error that names the file and says what to do."""
    msg = str(exc)
    low = msg.lower()
    if "lock" in low and ("conflicting" in low or "could not set" in low):
        return StoreLockedError(
            f"{path}: the database is locked: another process has it open (a writer, or a program that keeps "
            "it open to read). Wait for it to finish, or use another --db."
        )
    if "read-only" in low or "read only" in low:
        return StoreReadOnlyError(f"{path}: the database is open read-only; this command cannot write to it.")
    if "not a valid duckdb database file" in low:
        return StoreError(f"{path}: exists but is not a DuckDB database; check --db (or RSUPER_DB)")
    if "permission denied" in low or "read-only file system" in low:
        return StoreReadOnlyError(f"{path}: the database file cannot be written (permission denied).")
    return StoreError(f"{path}: {msg}")
