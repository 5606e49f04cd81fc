"""The backup and restore procedure of docs/admin-guide.md, run against a store that is being written:
SQLite online backup (`.backup`, or `VACUUM INTO`) first, then the images folder; the restored store
passes its integrity check and every record's image is there."""

from __future__ import annotations

import json
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


def test_backup_command_while_writing(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    from device.cli import main

    models = tmp_path / "models"
    (models / "b").mkdir(parents=True)
    (models / "DEFAULT").write_text("b\n")
    monkeypatch.setenv("SMEARSCOPE_MODELS_DIR", str(models))
    config = tmp_path / "config.toml"
    config.write_text(f'[device]\ndata_dir = "{tmp_path / "live"}"\n')
    store = Store(tmp_path / "live", reserve_bytes=0)
    stop, done = threading.Event(), []
    writer = threading.Thread(target=_writer, args=(store, stop, done))
    writer.start()
    dest = tmp_path / "backups"
    try:
        while store.counts()["records_total"] < 30:
            stop.wait(0.01)
        assert main(["backup", "--config", str(config), str(dest), "--keep", "2"]) == 0
        while store.counts()["records_total"] < 60:
            stop.wait(0.01)
        assert main(["backup", "--config", str(config), str(dest), "--keep", "2"]) == 0
    finally:
        stop.set()
        writer.join(timeout=30)
        store.close()
    out = capsys.readouterr().out
    assert [ln.startswith("backup ") for ln in out.splitlines()] == [True, True]
    made = sorted(dest.glob("smearscope-*"))
    assert len(made) == 2
    second = max(made, key=lambda p: json.loads((p / "BACKUP.json").read_text())["records"])
    info = json.loads((second / "BACKUP.json").read_text())
    assert info["images_linked"] >= 30  # the first backup's images are hard-linked, not copied again
    assert (second / "config.toml").is_file() and (second / "models" / "DEFAULT").is_file()
    conn = sqlite3.connect(second / DB_NAME)
    shas = [sha for (sha,) in conn.execute("SELECT image_sha256 FROM results")]
    conn.close()
    assert len(shas) >= 60
    assert all((second / "images" / s[:2] / f"{s}.jpg").is_file() for s in shas)
    assert not list(dest.glob(".smearscope-*.partial"))


def test_backup_keep_prunes(tmp_path: Path) -> None:
    from device.commands.backup import run_backup

    store = Store(tmp_path / "live", reserve_bytes=0)
    store.add_result(
        {"source": "upload", "label": "Pre", "image_sha256": store.put_image(b"\xff\xd8x\xff\xd9")}
    )
    store.close()
    dest = tmp_path / "b"
    for i in range(3):
        (dest / f"smearscope-2026010{i}T000000Z").mkdir(parents=True)
        (dest / f"smearscope-2026010{i}T000000Z" / "BACKUP.json").write_text("{}")
    info = run_backup(tmp_path / "live", dest, config_file=None, models=None, keep=2)
    kept = sorted(p.name for p in dest.iterdir())
    assert kept == ["smearscope-20260102T000000Z", Path(info["path"]).name]


def test_backup_without_a_store_is_an_error(tmp_path: Path) -> None:
    from device.commands.backup import run_backup
    from device.errors import SmearscopeError

    with pytest.raises(SmearscopeError, match="nothing to back up"):
        run_backup(tmp_path / "none", tmp_path / "b", config_file=None, models=None, keep=1)
