"""The DuckDB store: reports, ingests, extraction runs, extractions (and retried failures), tumors, per-organ
findings, cases.

`store` holds the `Store` class (connection, transactions, reads and writes), `tables` the DDL and its
migrations, `export` the R-Super export SQL, `errors` the store errors.
"""

from extract.store.errors import StoreError, StoreLockedError, StoreReadOnlyError
from extract.store.export import EXPORT_FORMATS
from extract.store.store import DEFAULT_DB, IngestStats, SourceInfo, Store, WriteStats, default_db_path

__all__ = [
    "DEFAULT_DB",
    "EXPORT_FORMATS",
    "IngestStats",
    "SourceInfo",
    "Store",
    "StoreError",
    "StoreLockedError",
    "StoreReadOnlyError",
    "WriteStats",
    "default_db_path",
]
