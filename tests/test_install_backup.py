"""The backup and restore procedure of docs/admin-guide.md, run against a store that is being written:
SQLite online backup (`.backup`, or `VACUUM INTO`) first, then the images folder; the restored store
passes its integrity check and every record's image is there."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from device.store.store import DB_NAME, Store


def _writer(store: Store, stop: threading.Event, done: list[int]) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        sha = store.put_image(b"\xff\xd8 fake jpeg %d \xff\xd9" % n)
        store.add_result(
            {"source": "upload", "label": "Pre", "probabilities": {"Pre": 1.0}, "image_sha256": sha}
        )
    done.append(n)


def _online_backup(db: Path, dest: Path, how: str) -> None:
    if shutil.which("sqlite3"):
        cmd = f".backup '{dest}'" if how == "backup" else f"VACUUM INTO '{dest}'"
        subprocess.run(["sqlite3", str(db), cmd], check=True, timeout=60, capture_output=True)
        return
    src = sqlite3.connect(db)  # the same online-backup API the CLI's .backup uses
    try:
        if how == "backup":
            out = sqlite3.connect(dest)
            src.backup(out)
            out.close()
        else:
            src.execute("VACUUM INTO ?", (str(dest),))
    finally:
        src.close()


@pytest.mark.parametrize("how", ["backup", "vacuum"])
def test_backup_while_writing_then_restore(tmp_path: Path, how: str) -> None:
    store = Store(tmp_path / "live", reserve_bytes=0)
    stop, done = threading.Event(), []
    writer = threading.Thread(target=_writer, args=(store, stop, done))
    writer.start()
    try:
        while store.counts()["records_total"] < 50:  # let it write for a while
            stop.wait(0.01)
        backup = tmp_path / "backup"
        backup.mkdir()
        _online_backup(store.db_path, backup / DB_NAME, how)  # 1. database first, while writing
        shutil.copytree(  # 2. then the images
            store.images_dir, backup / "images", ignore=shutil.ignore_patterns(".tmp-*")
        )
    finally:
        stop.set()
        writer.join(timeout=30)
        store.close()
    assert done and done[0] > 0

    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy(backup / DB_NAME, restored / DB_NAME)
    shutil.copytree(backup / "images", restored / "images")
    conn = sqlite3.connect(restored / DB_NAME)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = conn.execute("SELECT image_sha256 FROM results").fetchall()
    conn.close()
    assert len(rows) >= 50
    again = Store(restored, reserve_bytes=0)
    assert again.device_id == store.device_id  # a restored station keeps its identity
    missing = [sha for (sha,) in rows if not again.has_image(sha)]
    assert missing == []
    assert again.counts()["records_total"] == len(rows)
    again.close()
