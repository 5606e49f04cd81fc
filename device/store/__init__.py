"""Local store: SQLite (WAL) rows + JPEG files by hash. See DEVELOPERS.md for the schema."""

from device.store.guard import StoreDamaged
from device.store.lock import DataDirBusy, NeedsAdminError
from device.store.store import DiskFullError, Store, StoreError, record_json, utc_now

__all__ = [
    "DataDirBusy",
    "DiskFullError",
    "NeedsAdminError",
    "Store",
    "StoreDamaged",
    "StoreError",
    "record_json",
    "utc_now",
]
