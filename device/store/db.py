"""SQLite connections in WAL mode, and applying migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from device.store.migrations import MIGRATIONS


def connect(path: str | Path, *, readonly: bool = False, timeout: float = 10.0) -> sqlite3.Connection:
    """A connection with WAL, foreign keys, a busy timeout and Row access.

    One connection per thread (sqlite3 objects are not shared across threads here).
    """
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this database lacks. Returns the schema version now in force."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {version} is newer than this smearscope ({len(MIGRATIONS)}); "
            "upgrade smearscope instead of downgrading"
        )
    if version == len(MIGRATIONS):
        return version
    # A migration that rebuilds a table (SQLite's create-copy-drop-rename) must run with foreign keys
    # off (the pragma is ignored inside a transaction); each one proves it broke no reference instead.
    fk_on = bool(conn.execute("PRAGMA foreign_keys").fetchone()[0])
    conn.execute("PRAGMA foreign_keys=OFF")
    try:
        for i in range(version, len(MIGRATIONS)):
            conn.execute("BEGIN IMMEDIATE")
            try:
                broken_before = len(conn.execute("PRAGMA foreign_key_check").fetchall())
                for stmt in _statements(MIGRATIONS[i]):
                    conn.execute(stmt)
                broken = len(conn.execute("PRAGMA foreign_key_check").fetchall())
                if broken > broken_before:
                    raise RuntimeError(f"migration {i + 1} broke {broken - broken_before} reference(s)")
                conn.execute(f"PRAGMA user_version={i + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    finally:
        if fk_on:
            conn.execute("PRAGMA foreign_keys=ON")
    return len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (executescript would commit mid-migration)."""
    out, buf = [], []
    for line in script.splitlines():
        buf.append(line)
        candidate = "\n".join(buf)
        if sqlite3.complete_statement(candidate):
            stmt = candidate.strip()
            if stmt.strip(";").strip():
                out.append(stmt)
            buf = []
    return out
