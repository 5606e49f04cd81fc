"""Local store: SQLite (WAL) rows + JPEG files by hash. See DEVELOPERS.md for the schema."""

from device.store.store import DiskFullError, Store, StoreError, record_json, utc_now

__all__ = ["DiskFullError", "Store", "StoreError", "record_json", "utc_now"]
