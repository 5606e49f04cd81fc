"""The device's store: result rows in SQLite (WAL) and JPEG files named by their sha256.

Thread-safe: each thread gets its own connection (`device.store.db.connect`). Records are append-only.
Crash safety: an image file is written (temp + fsync + rename) first, then its `images` row and the
record that names it are committed in ONE transaction, so a `kill -9` at any point leaves either nothing
or a file no row names; such files (and image rows no record references, left by older versions) are
swept on open and by retention once older than a grace period. Stale temps are removed on open.

A full disk is a state, not an error (`disk_full`, `storage_state()`): image writes stop below the
reserve and resume by themselves once free space is back above it (plus a small hysteresis); SQLite's
own "database or disk is full" becomes a `DiskFullError` (HTTP 507) rather than a rollback error.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.record_fields import RECORD_FIELDS as _RECORD_FIELDS
from device.cells.record import NOT_A_CELL, CellRecord
from device.config import CellsConfig
from device.errors import SmearscopeError
from device.fsutil import TMP_PREFIX, atomic_write_bytes, remove_stale_temps
from device.slides.cells import record_label_ids, summarise_cells
from device.slides.summary import summarise
from device.store import cells as cells_sql
from device.store import lock as datadir_lock
from device.store.db import connect, migrate
from device.store.guard import (
    RESTORE_HINT,
    StoreDamaged,
    check_before_open,
    check_device_id,
    is_corruption,
    read_device_id,
    write_device_id,
)
from device.store.migrations import MIGRATIONS

log = logging.getLogger(__name__)

DB_NAME = "smearscope.db"
IMAGES_DIR = "images"
MAX_LIMIT = 1000
#: Free disk space (bytes) the store leaves untouched: below it, writes stop before the disk is full.
RESERVE_BYTES = 200 * 2**20
#: A temp file older than this (seconds) at start was left by an interrupted write and is removed.
TEMP_MAX_AGE_S = 60.0
#: A file or image row younger than this is never swept as an orphan (a write may be in progress).
ORPHAN_GRACE_S = 3600.0


class StoreError(SmearscopeError):
    """A store operation was refused (unknown record, closed sample, bad label...)."""


class DiskFullError(StoreError):
    """Free disk space is below the reserve: image writes are refused, classification goes on."""


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's SQLITE_FULL ("database or disk is full") or an OS ENOSPC/EDQUOT."""
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == getattr(sqlite3, "SQLITE_FULL", 13) or "disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def utc_now() -> str:
    """UTC ISO-8601 with milliseconds and a Z, e.g. 2026-11-22T01:02:03.123Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "process-" + uuid.uuid4().hex  # no boot id: at least one per process


BOOT_ID = _boot_id()


def record_json(row: Mapping[str, Any], cells: Sequence[CellRecord] = ()) -> dict[str, Any]:
    """A `results` row (and its cells) → the record JSON of DEVELOPERS.md (Contract 3). Use
    `records_json` for rows that may be 'cells' records: it reads their cells."""
    return {
        "id": row["id"],
        "seq": row["seq"],
        "device_id": row["device_id"],
        "sample_id": row["sample_id"],
        "captured_at": row["captured_at"],
        "monotonic_ns": row["monotonic_ns"],
        "boot_id": row["boot_id"],
        "source": row["source"],
        "kind": row["kind"],
        "review_of": row["review_of"],
        "models": json.loads(row["models_json"] or "[]"),
        "probabilities": json.loads(row["probabilities_json"] or "{}"),
        "label": row["label"],
        "confidence": row["confidence"],
        "abstained": bool(row["abstained"]),
        "reason": row["reason"],
        "quality": json.loads(row["quality_json"] or "{}"),
        "image_sha256": row["image_sha256"],
        "heatmap_sha256": row["heatmap_sha256"],
        "filename": row["filename"],
        "reviewer": row["reviewer"],
        "comment": row["comment"],
        "um_per_px": row["um_per_px"],
        "profile": row["profile"],
        "cells": [c.to_dict() for c in cells],
    }


def records_json(conn: sqlite3.Connection, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`results` rows → record JSON with their cells (one query for all the rows' cells)."""
    rows = list(rows)
    ids = [r["id"] for r in rows if r["kind"] == "cells"]
    cells = cells_sql.cells_by_record(conn, ids) if ids else {}
    return [record_json(r, cells.get(r["id"], ())) for r in rows]


def _um_per_px(value: Any) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise StoreError(f"um_per_px must be a positive number or null, not {value!r}")
    return float(value)


def _sample_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "slide_id": row["slide_id"],
        "notes": row["notes"],
        "status": row["status"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "created_by": row["created_by"],
        "summary": json.loads(row["summary_json"]) if row["summary_json"] else None,
    }


def _remove_temps(directory: Path, older_than_s: float) -> int:
    """Delete temp files a killed writer left. Another process (`smearscope sync --once` beside a running
    daemon) only removes ones older than `older_than_s`, so it never races a write in progress."""
    if older_than_s <= 0:
        return remove_stale_temps(directory)
    cutoff = time.time() - older_than_s
    n = 0
    for p in directory.rglob(f"{TMP_PREFIX}*"):
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
                n += 1
        except OSError:
            pass
    return n


class Store:
    """See DEVELOPERS.md Contract 4. `free_bytes` may be replaced (tests simulate a full disk)."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        device_id: str = "",
        reserve_bytes: int = RESERVE_BYTES,
        budget_bytes: int = 0,
        free_bytes: Callable[[], int] | None = None,
        temps_older_than_s: float = TEMP_MAX_AGE_S,
        orphan_grace_s: float = ORPHAN_GRACE_S,
    ):
        self.data_dir = Path(data_dir)
        self.images_dir = self.data_dir / IMAGES_DIR
        self.db_path = self.data_dir / DB_NAME
        self.reserve_bytes = reserve_bytes
        self.budget_bytes = budget_bytes
        self.free_bytes = free_bytes or (lambda: shutil.disk_usage(self.data_dir).free)
        self.orphan_grace_s = orphan_grace_s
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self.disk_full = False
        self._last_full_event = 0.0
        # {"um_per_px", "profile"} of the active calibration profile: what a record that does not say
        # is taken to have been classified at (set by Services; None: no profiles)
        self.acquisition_defaults: Callable[[], Mapping[str, Any]] | None = None
        #: how a slide's white cells are counted and called ([cells] of the config)
        self.cell_counting = CellsConfig()
        removed = self._open(temps_older_than_s)
        self._settle_device_id(device_id)
        if removed:
            self.add_event("warning", "store", f"removed {removed} temp file(s) left by an interrupted write")
        with contextlib.suppress(OSError, sqlite3.Error):
            self.sweep_orphans(files=True)

    def _open(self, temps_older_than_s: float) -> int:
        """Check, open and migrate the store; how many temp files an interrupted write left. A damaged or
        unusable data directory closes the store and raises StoreDamaged or StoreError saying what to do."""
        try:
            check_before_open(self.data_dir, self.db_path, self.images_dir)  # StoreDamaged: refuse
            self.images_dir.mkdir(parents=True, exist_ok=True)
            removed = _remove_temps(self.data_dir, temps_older_than_s)
            self._migrate()
            check_device_id(self.data_dir, self.get_meta("device_id"))
        except StoreDamaged:
            self.close()
            raise
        except sqlite3.DatabaseError as exc:
            self.close()
            if is_corruption(exc):
                raise StoreDamaged(
                    f"the station's database {self.db_path} is damaged ({exc}); {RESTORE_HINT}"
                ) from exc
            raise StoreError(
                f"cannot use the data directory {self.data_dir}: {exc}; check its owner and permissions "
                "(on a device: `sudo chown -R smearscope: /var/lib/smearscope`) or pass --data-dir"
            ) from exc
        except OSError as exc:
            self.close()
            raise StoreError(
                f"cannot use the data directory {self.data_dir}: {exc}; check its owner and permissions "
                "(on a device: `sudo chown -R smearscope: /var/lib/smearscope`) or pass --data-dir"
            ) from exc
        except RuntimeError as exc:  # a database from a newer smearscope
            self.close()
            raise StoreError(f"{self.db_path}: {exc}") from exc
        return removed

    def _settle_device_id(self, device_id: str) -> None:
        """The station's id: the one given, else the stored one, else a new one; kept in the database and
        in its file outside it."""
        stored_id = self.get_meta("device_id") or read_device_id(self.data_dir)
        self.device_id = device_id or stored_id or str(uuid.uuid4())
        if self.get_meta("device_id") != self.device_id:
            self.set_meta("device_id", self.device_id)
        if read_device_id(self.data_dir) != self.device_id:
            write_device_id(self.data_dir, self.device_id)  # the station's id outside the database too

    def _migrate(self) -> None:
        """Apply pending migrations under the data directory's lock (a running daemon of an older
        version must not find its schema changed under it); the daemon already holds the lock."""
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version >= len(MIGRATIONS):
            migrate(self.conn)  # up to date (or newer: migrate() says so)
            return
        # migration 5 rebuilds `results` (about 5 s per 100,000 records on a desktop: benchmarks/
        # cells_store_bench.py); say so before a station seems to hang at start
        if version:
            log.warning("upgrading the store's schema from version %d to %d", version, len(MIGRATIONS))
        with datadir_lock.holding(self.data_dir, "schema migration"):
            migrate(self.conn)

    @classmethod
    def from_config(cls, config, **kw) -> Store:
        """The daemon's store: it owns the data directory, so every temp file is a stale one."""
        kw.setdefault("temps_older_than_s", 0.0)
        store = cls(
            config.device.data_dir,
            device_id=config.device.id,
            reserve_bytes=config.store.reserve_mb * 2**20,
            budget_bytes=config.store.budget_mb * 2**20,
            **kw,
        )
        store.cell_counting = config.cells
        return store

    # -- connections ---------------------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (made on first use)."""
        c = getattr(self._local, "conn", None)
        if c is None:
            c = connect(self.db_path)
            self._local.conn = c
            with self._conns_lock:
                self._conns.append(c)
        return c

    def close(self) -> None:
        with self._conns_lock:
            for c in self._conns:
                with contextlib.suppress(sqlite3.Error):
                    c.close()
            self._conns.clear()
        self._local = threading.local()

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run `fn` in one IMMEDIATE transaction on this thread's connection. A full disk raises
        `DiskFullError` (SQLite may already have rolled back: "cannot rollback" must not hide it)."""
        c = self.conn
        try:
            c.execute("BEGIN IMMEDIATE")
            out = fn(c)
            c.execute("COMMIT")
            return out
        except BaseException as exc:
            if c.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    c.execute("ROLLBACK")
            if is_disk_full(exc) and not isinstance(exc, DiskFullError):
                self._disk_full(f"the database cannot grow ({exc})", exc)
            raise

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- images --------------------------------------------------------------------------------

    def image_path(self, sha: str) -> Path:
        if len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha):
            raise StoreError(f"not an image hash: {sha!r}")
        return self.images_dir / sha[:2] / f"{sha}.jpg"

    def has_image(self, sha: str) -> bool:
        return self.image_path(sha).is_file()

    def put_image(self, jpeg: bytes) -> str:
        """Store JPEG bytes under their sha256 (idempotent), file and row. Raises DiskFullError below
        the reserve. Records should use `write_image` + `add_result(images=...)` (one transaction)."""
        sha, size = self.write_image(jpeg)
        self._write(lambda c: self._register_images(c, [(sha, size)]))
        if self.budget_bytes:
            self.enforce_disk_budget()
        return sha

    def write_image(self, jpeg: bytes) -> tuple[str, int]:
        """Write the file only (atomic; idempotent) → (sha256, size). Its `images` row is inserted with
        the record that names it (`add_result(images=...)`), so a kill in between leaves no row."""
        sha = hashlib.sha256(jpeg).hexdigest()
        path = self.image_path(sha)
        if path.is_file():
            return sha, len(jpeg)
        if self.free_bytes() - len(jpeg) < self.effective_reserve():
            self.enforce_disk_budget()
            if self.free_bytes() - len(jpeg) < self.effective_reserve():
                reserve_mb = self.effective_reserve() // 2**20
                self._disk_full(f"free disk space is below the {reserve_mb} MB reserve")
        try:
            atomic_write_bytes(path, jpeg)
        except OSError as exc:
            if is_disk_full(exc):
                self._disk_full(f"the disk is full ({exc.strerror})", exc)
            raise
        self._set_full(False)
        return sha, len(jpeg)

    @staticmethod
    def _register_images(c: sqlite3.Connection, images: list[tuple[str, int]]) -> None:
        for sha, size in images:
            c.execute(
                "INSERT INTO images (sha256, bytes, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (sha256) DO UPDATE SET deleted_at = NULL",
                (sha, size, utc_now()),
            )

    # -- disk-full state ------------------------------------------------------------------------

    def disk_total(self) -> int:
        try:
            return shutil.disk_usage(self.data_dir).total
        except OSError:
            return 0

    def effective_reserve(self) -> int:
        """`[store] reserve_mb`, but never more than a tenth of the data disk: a reserve larger than a
        small disk's free space would keep it "full" for ever."""
        total = self.disk_total()
        return min(self.reserve_bytes, total // 10) if total else self.reserve_bytes

    def resume_bytes(self) -> int:
        """Free space at which a full store resumes image writes: the reserve plus a hysteresis of a
        tenth of it (at most 20 MB), so writes do not flap on and off at the threshold."""
        reserve = self.effective_reserve()
        return reserve + min(reserve // 10, 20 * 2**20)

    def refresh_disk_state(self) -> bool:
        """Leave the disk-full state by itself once free space is back (called by housekeeping and
        the status page). Returns the state now."""
        if self.disk_full:
            with contextlib.suppress(OSError):
                if self.free_bytes() >= self.resume_bytes():
                    self._set_full(False)
        return self.disk_full

    def storage_state(self) -> dict[str, Any]:
        """{"state": "ok"|"full", "free_bytes", "reserve_bytes", "resume_bytes"} for /healthz and status."""
        full = self.refresh_disk_state()
        try:
            free = self.free_bytes()
        except OSError:
            free = None
        return {
            "state": "full" if full else "ok",
            "free_bytes": free,
            "reserve_bytes": self.effective_reserve(),
            "resume_bytes": self.resume_bytes(),
        }

    def _set_full(self, full: bool) -> None:
        was, self.disk_full = self.disk_full, full
        if was and not full:
            with contextlib.suppress(sqlite3.Error):
                self.add_event("info", "store", "storage available again: image writes resumed")

    def _disk_full(self, why: str, cause: BaseException | None = None) -> None:
        self.disk_full = True
        now = time.monotonic()
        if now - self._last_full_event > 60:  # one alert a minute, not one per frame
            self._last_full_event = now
            with contextlib.suppress(sqlite3.Error):
                msg = f"storage full: image writes stopped: {why}; classification goes on"
                self.add_event("error", "store", msg)
        raise DiskFullError(f"storage full: not stored: {why}") from cause

    def images_bytes(self) -> int:
        row = self.conn.execute(
            "SELECT coalesce(sum(bytes), 0) FROM images WHERE deleted_at IS NULL"
        ).fetchone()
        return int(row[0])

    def enforce_disk_budget(self) -> int:
        """Delete the oldest SYNCED images until within budget and above the reserve; never an unsynced
        one. Returns how many files were deleted."""
        deleted = 0
        total = self.images_bytes()
        while True:
            over_budget = self.budget_bytes and total > self.budget_bytes
            low_disk = self.free_bytes() < self.effective_reserve()
            if not (over_budget or low_disk):
                break
            rows = self.conn.execute(
                "SELECT sha256, bytes FROM images WHERE synced = 1 AND deleted_at IS NULL "
                "ORDER BY created_at, sha256 LIMIT 100"
            ).fetchall()
            if not rows:
                break
            for sha, size in rows:
                with contextlib.suppress(FileNotFoundError):
                    self.image_path(sha).unlink()
                self.conn.execute("UPDATE images SET deleted_at = ? WHERE sha256 = ?", (utc_now(), sha))
                deleted += 1
                total -= size
                if not (self.budget_bytes and total > self.budget_bytes) and not (
                    self.free_bytes() < self.effective_reserve()
                ):
                    break
        if deleted:
            self.add_event("info", "store", f"retention removed {deleted} synced image(s)")
        return deleted

    def sweep_orphans(self, *, files: bool = False, grace_s: float | None = None) -> int:
        """Remove what an interrupted write left: image rows no record references and, with `files`,
        image files no row names — only when older than the grace period (a write may be under way
        in this or another process). Returns how many files/rows were removed."""
        grace = self.orphan_grace_s if grace_s is None else grace_s
        cutoff_ts = time.time() - grace
        cutoff = datetime.fromtimestamp(cutoff_ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        rows = self.conn.execute(
            "SELECT sha256 FROM images i WHERE created_at < ? "
            "AND NOT EXISTS (SELECT 1 FROM results r WHERE r.image_sha256 = i.sha256) "
            "AND NOT EXISTS (SELECT 1 FROM results r WHERE r.heatmap_sha256 = i.sha256)",
            (cutoff,),
        ).fetchall()
        removed = 0
        for (sha,) in rows:
            with contextlib.suppress(FileNotFoundError):
                self.image_path(sha).unlink()
            self.conn.execute("DELETE FROM images WHERE sha256 = ?", (sha,))
            removed += 1
        if files and self.images_dir.is_dir():
            for p in self.images_dir.glob("??/*.jpg"):
                try:
                    if p.stat().st_mtime >= cutoff_ts:
                        continue
                except OSError:
                    continue
                sha = p.stem
                if self.conn.execute("SELECT 1 FROM images WHERE sha256 = ?", (sha,)).fetchone() is None:
                    with contextlib.suppress(OSError):
                        p.unlink()
                        removed += 1
        if removed:
            msg = f"removed {removed} orphan image(s) left by an interrupted write"
            self.add_event("warning", "store", msg)
        return removed

    # -- results -------------------------------------------------------------------------------

    def add_result(
        self,
        record: Mapping[str, Any],
        *,
        images: list[tuple[str, int]] | None = None,
        cells: Sequence[CellRecord] = (),
    ) -> dict[str, Any]:
        """Insert a record (keys of the record JSON); fills id, seq, captured_at, monotonic_ns, boot_id,
        device_id. `images` ((sha256, size) of files written by `write_image`) get their rows and
        `cells` (a 'cells' record's counted cells) their rows in the same transaction: a kill leaves the
        whole record or nothing. Returns the stored record JSON."""
        if not record.get("label"):
            raise StoreError("a result needs a label")
        if record.get("source") not in ("camera", "upload", "review"):
            raise StoreError(f"unknown result source {record.get('source')!r}")
        if record.get("kind") not in (None, "classification", "review", "cells"):
            raise StoreError(f"unknown result kind {record.get('kind')!r}")
        cells = list(cells)
        if cells and record.get("kind") != "cells":
            raise StoreError("only a 'cells' record has cells")
        try:
            cells_sql.check_cells(cells)
        except ValueError as exc:
            raise StoreError(str(exc)) from exc
        row = {k: record.get(k) for k in _RECORD_FIELDS}
        if self.acquisition_defaults is not None and ("um_per_px" not in record or "profile" not in record):
            defaults = self.acquisition_defaults() or {}
            for key in ("um_per_px", "profile"):
                if key not in record:
                    row[key] = defaults.get(key)
        row["um_per_px"] = _um_per_px(row["um_per_px"])
        row["profile"] = str(row["profile"])[:200] if row["profile"] else None
        row["kind"] = row["kind"] or "classification"
        row["confidence"] = float(row["confidence"] or 0.0)
        row["abstained"] = int(bool(row["abstained"]))
        row["id"] = record.get("id") or str(uuid.uuid4())
        row["device_id"] = self.device_id
        row["captured_at"] = record.get("captured_at") or utc_now()
        row["monotonic_ns"] = record.get("monotonic_ns") or time.monotonic_ns()
        row["boot_id"] = record.get("boot_id") or BOOT_ID
        row["models_json"] = json.dumps(record.get("models") or [])
        row["probabilities_json"] = json.dumps(record.get("probabilities") or {})
        row["quality_json"] = json.dumps(record.get("quality") or {})
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)

        def insert(c: sqlite3.Connection) -> dict[str, Any]:
            if row["sample_id"]:
                s = c.execute("SELECT status FROM samples WHERE id = ?", (row["sample_id"],)).fetchone()
                if s is None:
                    raise StoreError(f"no sample {row['sample_id']}")
            self._register_images(c, images or [])
            cur = c.execute(f"INSERT INTO results ({cols}) VALUES ({marks})", tuple(row.values()))
            cells_sql.insert_cells(c, row["id"], cells)
            out = c.execute("SELECT * FROM results WHERE seq = ?", (cur.lastrowid,)).fetchone()
            return record_json(out, cells)

        return self._write(insert)

    def get_result(self, result_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM results WHERE id = ?", (result_id,)).fetchone()
        return records_json(self.conn, [row])[0] if row else None

    def list_results(
        self,
        *,
        sample: str | None = None,
        label: str | None = None,
        since: str | None = None,
        until: str | None = None,
        abstained: bool | None = None,
        reviewed: bool | None = None,
        kind: str | None = "classification",
        source: str | None = None,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Newest first, keyset-paginated: pass the last seq you got as `before_seq` for the next page.
        `since`/`until` are UTC ISO strings (captured_at >= since, < until)."""
        where, args = [], []
        for col, val in (("sample_id", sample), ("label", label), ("kind", kind), ("source", source)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if since:
            where.append("captured_at >= ?")
            args.append(since)
        if until:
            where.append("captured_at < ?")
            args.append(until)
        if abstained is not None:
            where.append("abstained = ?")
            args.append(int(abstained))
        if reviewed is not None:
            exists = "EXISTS (SELECT 1 FROM results r2 WHERE r2.review_of = results.id)"
            where.append(exists if reviewed else f"NOT {exists}")
        if before_seq is not None:
            where.append("seq < ?")
            args.append(int(before_seq))
        sql = "SELECT * FROM results"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(max(1, min(int(limit), MAX_LIMIT)))
        return records_json(self.conn, self.conn.execute(sql, args))

    def reviews_of(self, result_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM results WHERE review_of = ? ORDER BY seq", (result_id,))
        return records_json(self.conn, rows)

    def add_review(
        self, result_id: str, label: str | None, comment: str = "", user: str | None = None
    ) -> dict[str, Any]:
        """A technician's review: a new record pointing at the old one. `label=None` means "agree"."""
        orig = self.get_result(result_id)
        if orig is None:
            raise StoreError(f"no result {result_id}")
        if orig["kind"] != "classification":
            raise StoreError("a review reviews a classification, not another review")
        known = list(orig["probabilities"])
        if label is not None and known and label not in known:
            raise StoreError(f"unknown label {label!r}; expected one of {', '.join(known)}")
        review = self.add_result(
            {
                "sample_id": orig["sample_id"],
                "source": "review",
                "kind": "review",
                "review_of": result_id,
                "models": orig["models"],
                "probabilities": orig["probabilities"],
                "label": label or orig["label"],
                "confidence": 1.0,
                "abstained": False,
                "quality": orig["quality"],
                "image_sha256": orig["image_sha256"],
                "heatmap_sha256": orig["heatmap_sha256"],
                "reviewer": user,
                "comment": comment or ("agree" if label is None else None),
                "um_per_px": orig["um_per_px"],
                "profile": orig["profile"],
            }
        )
        if orig["sample_id"]:
            self.refresh_finished_summary(orig["sample_id"])  # a review counts whenever it is made
        return review

    # -- cells ---------------------------------------------------------------------------------

    def record_cells(self, record_id: str) -> list[CellRecord]:
        return cells_sql.cells_by_record(self.conn, [record_id]).get(record_id, [])

    def sample_cells(self, sample_id: str) -> list[tuple[str, CellRecord]]:
        """(record id, cell) of every counted cell of the sample, in capture order."""
        return cells_sql.sample_cells(self.conn, sample_id)

    def review_cell(self, record_id: str, index: int, label: str, user: str) -> CellRecord:
        """A technician's label for one cell: a label of the record's models or `NOT_A_CELL` (excluded
        from every count). The cell keeps the classifier's decision beside the review; the record goes
        back in the sync queue so the hub gets the review once more (DEVELOPERS.md, Contract 5). A
        finished sample's stored summary is recomputed: a review counts whenever it is made."""
        user = (user or "").strip()
        if not user:
            raise StoreError("a cell review needs the reviewer's name")
        if not isinstance(index, int) or isinstance(index, bool):
            raise StoreError(f"a cell index is a whole number, not {index!r}")

        def txn(c: sqlite3.Connection) -> CellRecord:
            row = c.execute("SELECT * FROM results WHERE id = ?", (record_id,)).fetchone()
            if row is None:
                raise StoreError(f"no result {record_id}")
            if row["kind"] != "cells":
                raise StoreError(f"record {record_id} has no cells (a {row['kind']} record)")
            cells = cells_sql.cells_by_record(c, [record_id]).get(record_id, [])
            cell = next((x for x in cells if x.index == index), None)
            if cell is None:
                raise StoreError(f"no cell {index} in record {record_id}")
            allowed = record_label_ids(record_json(row, cells), self.malignant_labels())
            if label != NOT_A_CELL and label not in allowed:
                raise StoreError(
                    f"unknown label {label!r}; expected one of {', '.join([*allowed, NOT_A_CELL])}"
                )
            if cell.reviewed_label == label and cell.reviewer == user:
                return cell  # the same review again: nothing changes, nothing to send
            at = utc_now()
            cells_sql.set_review(c, record_id, index, label, user, at)
            # synced → pending (send again); sending → the pass in flight carries the old cells, so
            # settling it puts the record back to pending instead of synced (Outbox.settle)
            c.execute(
                "UPDATE results SET "
                "sync_state = CASE sync_state WHEN 'synced' THEN 'pending' ELSE sync_state END, "
                "sync_again = CASE sync_state WHEN 'sending' THEN 1 ELSE sync_again END "
                "WHERE id = ?",
                (record_id,),
            )
            if row["sample_id"]:
                self.refresh_finished_summary(row["sample_id"])  # same connection: same transaction
            return cell.reviewed(label, user, at)

        return self._write(txn)

    def refresh_finished_summary(self, sample_id: str) -> None:
        """Recompute a finished sample's stored summary (after a cell review)."""
        s = self.get_sample(sample_id)
        if s is None or s["status"] != "finished":
            return
        self.conn.execute(
            "UPDATE samples SET summary_json = ? WHERE id = ?",
            (json.dumps(self.sample_summary(sample_id)), sample_id),
        )

    # -- samples -------------------------------------------------------------------------------

    def open_sample(self, slide_id: str, notes: str = "", user: str | None = None) -> dict[str, Any]:
        slide_id = (slide_id or "").strip()
        if not slide_id:
            raise StoreError("a sample needs a slide id (lab number or slide label)")
        sid = str(uuid.uuid4())
        self.conn.execute(
            "INSERT INTO samples (id, slide_id, notes, started_at, created_by) VALUES (?, ?, ?, ?, ?)",
            (sid, slide_id[:200], (notes or "")[:2000], utc_now(), user),
        )
        return self.get_sample(sid)  # type: ignore[return-value]

    def get_sample(self, sample_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM samples WHERE id = ?", (sample_id,)).fetchone()
        return _sample_json(row) if row else None

    def finish_sample(self, sample_id: str) -> dict[str, Any]:
        """Close a sample and freeze its summary."""
        s = self.get_sample(sample_id)
        if s is None:
            raise StoreError(f"no sample {sample_id}")
        if s["status"] == "finished":
            return s
        summary = self.sample_summary(sample_id)
        self.conn.execute(
            "UPDATE samples SET status = 'finished', finished_at = ?, summary_json = ? WHERE id = ?",
            (utc_now(), json.dumps(summary), sample_id),
        )
        return self.get_sample(sample_id)  # type: ignore[return-value]

    def list_samples(
        self, *, status: str | None = None, before: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Newest first; `before` is the last `started_at` you got (keyset pagination)."""
        where, args = [], []
        if status:
            where.append("status = ?")
            args.append(status)
        if before:
            where.append("started_at < ?")
            args.append(before)
        sql = "SELECT * FROM samples" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY started_at DESC LIMIT ?"
        args.append(max(1, min(int(limit), MAX_LIMIT)))
        return [_sample_json(r) for r in self.conn.execute(sql, args)]

    def malignant_labels(self) -> dict[str, bool | None]:
        """Label id → malignant flag of the models in service (kept in meta by the daemon)."""
        raw = self.get_meta("labels_json")
        return json.loads(raw) if raw else {}

    def set_labels(self, labels: Mapping[str, bool | None]) -> None:
        self.set_meta("labels_json", json.dumps(dict(labels)))

    def sample_summary(self, sample_id: str) -> dict[str, Any]:
        """The slide call and its rule: from the white cells of its 'cells' records when it has any
        (`device.slides.cells`), else from its fields (`device.slides.summary`). Reviews count
        whether the sample is open or finished."""
        cell_rows = self.conn.execute(
            "SELECT * FROM results WHERE sample_id = ? AND kind = 'cells' ORDER BY seq", (sample_id,)
        ).fetchall()
        if cell_rows:
            # the labels come from each record's stored differential: its cells are only read for a
            # record without one (record_labels' fallback)
            cells_of = cells_sql.cells_by_record(self.conn, [r["id"] for r in cell_rows])
            records = [
                record_json(r, () if '"differential"' in r["quality_json"] else cells_of.get(r["id"], ()))
                for r in cell_rows
            ]
            cells = [c for r in cell_rows for c in cells_of.get(r["id"], ())]
            return summarise_cells(records, self.malignant_labels(), self.cell_counting, cells)
        fields = [
            {"id": r["id"], "label": r["label"], "abstained": bool(r["abstained"])}
            for r in self.conn.execute(
                "SELECT id, label, abstained FROM results WHERE sample_id = ? AND kind = 'classification'",
                (sample_id,),
            )
        ]
        reviews = {
            r["review_of"]: r["label"]
            for r in self.conn.execute(
                "SELECT review_of, label FROM results WHERE sample_id = ? AND kind = 'review' ORDER BY seq",
                (sample_id,),
            )
        }
        return summarise(fields, self.malignant_labels(), reviews)

    # -- events and counts ---------------------------------------------------------------------

    def add_event(self, level: str, source: str, message: str) -> None:
        if level not in ("info", "warning", "error"):
            level = "info"
        self.conn.execute(
            "INSERT INTO events (at, level, source, message) VALUES (?, ?, ?, ?)",
            (utc_now(), level, source, message[:2000]),
        )
        getattr(log, "error" if level == "error" else level)("%s: %s", source, message)

    def recent_events(self, n: int = 50) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM events ORDER BY id DESC LIMIT ?", (max(1, min(n, 1000)),))
        return [dict(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """`records_total` (all rows) and `unsynced` (pending or sending)."""
        total = self.conn.execute("SELECT coalesce(max(seq), 0) FROM results").fetchone()[0]
        unsynced = self.conn.execute(
            "SELECT count(*) FROM results WHERE sync_state IN ('pending', 'sending')"
        ).fetchone()[0]
        return {"records_total": int(total), "unsynced": int(unsynced)}
