"""The outbox: the sync state of every record, kept in the store's own `results`/`images` columns.

States: pending → sending → synced | rejected (+ sync_error). Nothing is ever deleted here: a record
leaves the queue only when the hub confirmed it (accepted or duplicate) or rejected it (quarantine).
`sending` rows left by a crash go back to pending when the next push pass starts (a pass holds an
flock, so it never takes back rows a live pass is sending); resending is safe because the hub is
idempotent by UUID.

A record's cells travel in its JSON (`"cells"`). A cell review puts a synced record back to pending,
or, while the record is being sent (the payload in flight has the old cells), sets `sync_again` so
that settling it makes it pending instead of synced: the hub gets each review exactly once more.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from device.store import Store, utc_now
from device.store.store import records_json

LOCK_NAME = "sync.lock"


class SyncBusy(RuntimeError):
    """Another push pass (the daemon's worker or `smearscope sync`) holds the outbox."""


class Outbox:
    """Outbox SQL over a `Store` (uses the calling thread's connection)."""

    def __init__(self, store: Store):
        self.store = store

    @contextlib.contextmanager
    def exclusive(self, wait_s: float = 0.0) -> Iterator[None]:
        """Hold the outbox for one push pass (an flock on <data_dir>/sync.lock, released by the kernel
        if the process dies), so `recover()` never takes back rows another live pass is sending."""
        fd = os.open(self.store.data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise SyncBusy(
                            "another sync is running (the daemon's worker or smearscope sync)"
                        ) from None
                    time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @property
    def conn(self) -> sqlite3.Connection:
        return self.store.conn

    def _write(self, sql: str, args: Sequence[Any] = ()) -> int:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            n = c.execute(sql, args).rowcount
            c.execute("COMMIT")
            return n
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def recover(self) -> int:
        """Rows a crashed run left in `sending` go back to `pending`. Returns how many."""
        return self._write("UPDATE results SET sync_state = 'pending' WHERE sync_state = 'sending'")

    def claim(self, limit: int, after_seq: int = 0) -> list[dict[str, Any]]:
        """The oldest `limit` pending records after `after_seq` (by seq), marked `sending`, as record
        JSON. A push pass moves `after_seq` forward so a deferred record waits for the next pass."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            rows = c.execute(
                "SELECT * FROM results WHERE sync_state = 'pending' AND seq > ? ORDER BY seq LIMIT ?",
                (int(after_seq), int(limit)),
            ).fetchall()
            out = records_json(c, rows)  # the cells read in the same snapshot as their records
            if rows:
                c.execute(
                    "UPDATE results SET sync_state = 'sending', sync_again = 0 "
                    "WHERE sync_state = 'pending' AND seq > ? AND seq <= ?",
                    (int(after_seq), rows[-1]["seq"]),
                )
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return out

    def release(self, ids: Iterable[str], error: str | None = None) -> None:
        """Give records back to the queue (the push failed; nothing was confirmed)."""
        self._set_many(
            ids,
            "UPDATE results SET sync_state = 'pending', sync_error = ? WHERE id = ? "
            "AND sync_state = 'sending'",
            error,
        )

    def settle(self, answers: Sequence[tuple[str, str, str | None]]) -> dict[str, int]:
        """Apply the hub's per-record answers: (id, status, reason). accepted/duplicate → synced,
        rejected → quarantined, deferred (or anything else) → pending again with the reason."""
        now = utc_now()
        counts = {"accepted": 0, "duplicate": 0, "rejected": 0, "deferred": 0}
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for rid, status, reason in answers:
                if status in ("accepted", "duplicate"):
                    c.execute(
                        "UPDATE results SET sync_state = CASE sync_again WHEN 1 THEN 'pending' "
                        "ELSE 'synced' END, synced_at = ?, sync_error = NULL, sync_again = 0 "
                        "WHERE id = ? AND sync_state = 'sending'",
                        (now, rid),
                    )
                elif status == "rejected":
                    self._quarantine(c, rid, reason or "rejected by the hub")
                else:
                    status = "deferred"
                    c.execute(
                        "UPDATE results SET sync_state = 'pending', sync_error = ? WHERE id = ? "
                        "AND sync_state = 'sending'",
                        (reason or "deferred by the hub", rid),
                    )
                counts[status] += 1
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return counts

    def quarantine(self, ids: Iterable[str], reason: str) -> None:
        """Mark records rejected (kept on the device with the reason; they never block the queue)."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for rid in ids:
                self._quarantine(c, rid, reason)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    @staticmethod
    def _quarantine(c: sqlite3.Connection, rid: str, reason: str) -> None:
        c.execute(
            "UPDATE results SET sync_state = 'rejected', sync_error = ? WHERE id = ? "
            "AND sync_state IN ('sending', 'pending')",
            (reason[:1000], rid),
        )
        c.execute(
            "INSERT INTO events (at, level, source, message) VALUES (?, 'warning', 'sync', ?)",
            (utc_now(), f"record {rid} quarantined: {reason}"[:2000]),
        )

    def retry_rejected(self) -> int:
        """Put quarantined records back in the queue (after fixing what the hub complained about)."""
        return self._write("UPDATE results SET sync_state = 'pending' WHERE sync_state = 'rejected'")

    def _set_many(self, ids: Iterable[str], sql: str, error: str | None) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.executemany(sql, [(error, rid) for rid in ids])
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    # -- images ----------------------------------------------------------------------------------

    def unsynced_images(self, records: Iterable[dict[str, Any]]) -> list[str]:
        """Hashes the records name that the hub has not confirmed yet (in first-use order)."""
        wanted: dict[str, None] = {}
        for r in records:
            for key in ("image_sha256", "heatmap_sha256"):
                if r.get(key):
                    wanted[r[key]] = None
        if not wanted:
            return []
        synced: set[str] = set()
        shas = list(wanted)
        for i in range(0, len(shas), 500):
            chunk = shas[i : i + 500]
            marks = ",".join("?" for _ in chunk)
            synced.update(
                r[0]
                for r in self.conn.execute(
                    f"SELECT sha256 FROM images WHERE synced = 1 AND sha256 IN ({marks})", chunk
                )
            )
        return [s for s in shas if s not in synced]

    def mark_images_synced(self, shas: Iterable[str]) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.executemany("UPDATE images SET synced = 1 WHERE sha256 = ?", [(s,) for s in shas])
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def forget_images(self, shas: Iterable[str]) -> None:
        """The hub says it lacks these after all (e.g. restored from a backup): upload them again."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.executemany("UPDATE images SET synced = 0 WHERE sha256 = ?", [(s,) for s in shas])
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def image_path(self, sha: str) -> Path:
        return self.store.image_path(sha)

    # -- samples (slide id, open/finished, the device's slide call) ------------------------------------

    SAMPLES_CURSOR = "sync_samples_finished_at"

    def samples(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        """The store's JSON of these samples (current state)."""
        out = []
        for sid in dict.fromkeys(ids):
            s = self.store.get_sample(sid)
            if s is not None:
                out.append(s)
        return out

    def finished_samples(self) -> list[dict[str, Any]]:
        """Samples finished since the last finished one the hub confirmed (cursor on finished_at, ties
        resent; a device clock set back by more than that gap would skip one until its next record)."""
        cursor = self.store.get_meta(self.SAMPLES_CURSOR) or ""
        rows = self.conn.execute(
            "SELECT id FROM samples WHERE status = 'finished' AND finished_at >= ? "
            "ORDER BY finished_at LIMIT 500",
            (cursor,),
        )
        return self.samples(r[0] for r in rows)

    def samples_confirmed(self, samples: Sequence[dict[str, Any]]) -> None:
        done = [s["finished_at"] for s in samples if s.get("status") == "finished" and s.get("finished_at")]
        cursor = self.store.get_meta(self.SAMPLES_CURSOR) or ""
        if done and max(done) > cursor:
            self.store.set_meta(self.SAMPLES_CURSOR, max(done))

    # -- what the page and status show ------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        out = {"pending": 0, "sending": 0, "synced": 0, "rejected": 0}
        for state, n in self.conn.execute("SELECT sync_state, count(*) FROM results GROUP BY sync_state"):
            out[state] = int(n)
        return out

    def rejected(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest quarantined records: id, seq, captured_at, label and the hub's reason."""
        rows = self.conn.execute(
            "SELECT id, seq, captured_at, label, sync_error FROM results WHERE sync_state = 'rejected' "
            "ORDER BY seq DESC LIMIT ?",
            (int(limit),),
        )
        return [
            {
                "id": r["id"],
                "seq": r["seq"],
                "captured_at": r["captured_at"],
                "label": r["label"],
                "reason": r["sync_error"],
            }
            for r in rows
        ]
