"""Before the store opens its database: is this the station's data, or was it lost?

SQLite turns a missing or zero-length file into a new, empty database, and the store then makes a new
device id: the station would serve on as a different, empty one, its records out of view and its
images orphaned. So a data directory that shows a station lived here (image files, or the
`device-id` file written at its first start) must have a healthy database; otherwise the store refuses
with `StoreDamaged` (exit status 3, which systemd does not restart) and the way back: restore the
newest backup. A truly fresh directory (neither) starts a new station.

`device-id` holds the station's id outside the database too, so a database from another station (or a
new one) in an existing data directory is caught as well.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from device.fsutil import TMP_PREFIX, atomic_write_bytes
from device.store.lock import NeedsAdminError

DEVICE_ID_NAME = "device-id"
SQLITE_HEADER = b"SQLite format 3\x00"
RESTORE_HINT = (
    "restore from backup: sudo smearscope restore /var/backups/smearscope/smearscope-<newest> "
    "(docs/admin-guide.md, 'Back up and restore the store')"
)
_CORRUPT_CODES = {getattr(sqlite3, "SQLITE_CORRUPT", 11), getattr(sqlite3, "SQLITE_NOTADB", 26)}


class StoreDamaged(NeedsAdminError):
    """The data directory holds a station whose database is missing, empty, corrupt or another's."""


@dataclass(frozen=True)
class DbState:
    """What the database file is: `missing` | `empty` (no file content or no schema) | `ok` | `corrupt`."""

    state: str
    detail: str = ""


def is_corruption(exc: BaseException) -> bool:
    """SQLite's "database disk image is malformed" / "file is not a database" (not a permission error)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code in _CORRUPT_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


def inspect_db(db_path: Path) -> DbState:
    """Header, then `PRAGMA quick_check` (every page's structure: O(size), no index cross-check).
    A permission problem raises the OSError / sqlite3.Error as it is (the caller words it)."""
    try:
        size = db_path.stat().st_size
    except FileNotFoundError:
        return DbState("missing")
    wal = db_path.with_name(db_path.name + "-wal")
    wal_pages = wal.is_file() and wal.stat().st_size > 0  # pages not yet checkpointed: SQLite reads them
    if size == 0 and not wal_pages:
        return DbState("empty", "the file is 0 bytes long")
    with db_path.open("rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER and not (size == 0 and wal_pages):
        return DbState("corrupt", "its header is not SQLite's: the file is garbled or not a database")
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
        if rows != ["ok"]:
            found = "; ".join(r.replace("\n", "; ") for r in rows)
            return DbState("corrupt", f"SQLite's quick_check: {found}")
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        if is_corruption(exc):
            return DbState("corrupt", f"SQLite: {exc}")
        raise
    finally:
        conn.close()
    if tables == 0 and version == 0:
        return DbState("empty", "it holds no tables")
    return DbState("ok")


def read_device_id(data_dir: Path) -> str | None:
    try:
        text = (data_dir / DEVICE_ID_NAME).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def write_device_id(data_dir: Path, device_id: str) -> None:
    atomic_write_bytes(data_dir / DEVICE_ID_NAME, f"{device_id}\n".encode())


def station_evidence(data_dir: Path, images_dir: Path) -> str | None:
    """Why this data directory belongs to an existing station (None: a fresh one)."""
    device_id = read_device_id(data_dir)
    if device_id:
        return f"{data_dir / DEVICE_ID_NAME} names station {device_id}"
    if (data_dir / DEVICE_ID_NAME).exists():
        return f"{data_dir / DEVICE_ID_NAME} exists"
    with contextlib.suppress(OSError):
        for path in images_dir.rglob("*.jpg"):
            if not path.name.startswith(TMP_PREFIX):
                return f"{images_dir} holds images"
    return None


def check_before_open(data_dir: Path, db_path: Path, images_dir: Path) -> DbState:
    """Raise `StoreDamaged` when the database is corrupt, or missing/empty while a station lived here."""
    db = inspect_db(db_path)
    if db.state == "corrupt":
        raise StoreDamaged(
            f"the station's database {db_path} is damaged ({db.detail}); refusing to start on it. "
            f"Keep the file for inspection and {RESTORE_HINT}"
        )
    if db.state in ("missing", "empty"):
        evidence = station_evidence(data_dir, images_dir)
        if evidence:
            what = "is missing" if db.state == "missing" else f"is empty ({db.detail})"
            raise StoreDamaged(
                f"the station's database {db_path} {what}, but {evidence}: starting would make a new, "
                f"empty station and hide its records. Refusing to start; {RESTORE_HINT}. (A new "
                f"station on purpose: move {data_dir} away first.)"
            )
    return db


def check_device_id(data_dir: Path, db_device_id: str | None) -> None:
    """The `device-id` file and the database's meta must name the same station."""
    file_id = read_device_id(data_dir)
    if file_id and db_device_id and file_id != db_device_id:
        raise StoreDamaged(
            f"{data_dir / DEVICE_ID_NAME} says this is station {file_id} but the database "
            f"{data_dir} holds is station {db_device_id}'s: the database was replaced by another "
            f"station's. Refusing to start; {RESTORE_HINT}, or put that station's database back"
        )
