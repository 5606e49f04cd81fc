"""An upgrade from the oldest data directory this code supports (schema at migration 1, no `device-id`
file, installed models): the current daemon migrates it forward and loses nothing; a backup taken at
that schema restores and migrates the same way."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
from pathlib import Path

from device.cli import main
from device.commands.backup import run_backup
from device.store import Store
from device.store.db import _statements
from device.store.guard import DEVICE_ID_NAME
from device.store.migrations import M001_CORE, MIGRATIONS
from tests.test_daemon import free_port, get, start, wait_for, write_config

OLD_ID = "6f9619ff-8b86-d011-b42d-00c04fc964ff"


def old_release_data_dir(data: Path) -> dict[str, bytes]:
    """What the first release left on disk: the M001 schema, records + images, models with a version
    link. Returns the models' files (path -> bytes)."""
    data.mkdir(parents=True)
    conn = sqlite3.connect(data / "smearscope.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for stmt in _statements(M001_CORE):
        conn.execute(stmt)
    conn.execute("PRAGMA user_version=1")
    conn.execute("INSERT INTO meta (key, value) VALUES ('device_id', ?)", (OLD_ID,))
    conn.execute(
        "INSERT INTO samples (id, slide_id, status, started_at) "
        "VALUES ('s1', 'LAB-1', 'open', '2026-01-02T03:04:05Z')"
    )
    for i in range(5):
        jpeg = b"\xff\xd8 old release %d " % i + b"z" * 1000
        sha = hashlib.sha256(jpeg).hexdigest()
        (data / "images" / sha[:2]).mkdir(parents=True, exist_ok=True)
        (data / "images" / sha[:2] / f"{sha}.jpg").write_bytes(jpeg)
        conn.execute(
            "INSERT INTO images (sha256, bytes, created_at) VALUES (?, ?, '2026-01-02T03:04:05Z')",
            (sha, len(jpeg)),
        )
        conn.execute(
            "INSERT INTO results (id, device_id, sample_id, captured_at, source, label, confidence, "
            "probabilities_json, image_sha256) "
            "VALUES (?, ?, 's1', '2026-01-02T03:04:05Z', 'camera', 'Pre', 0.9, ?, ?)",
            (f"r{i}", OLD_ID, json.dumps({"Pre": 0.9, "Benign": 0.1}), sha),
        )
    conn.close()
    models = data / "models"
    (models / ".versions" / "old" / "1").mkdir(parents=True)
    (models / ".versions" / "old" / "1" / "model.tflite").write_bytes(b"old model")
    (models / ".versions" / "old" / "1" / "manifest.json").write_text('{"name": "old"}')
    os.symlink(".versions/old/1", models / "old")
    (models / "DEFAULT").write_text("old\n")
    return {str(p.relative_to(models)): p.read_bytes() for p in models.rglob("*") if p.is_file()}


def check_upgraded(data: Path, models_before: dict[str, bytes]) -> None:
    s = Store(data, reserve_bytes=0)
    try:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert s.device_id == OLD_ID
        old = {r["id"]: r for r in s.list_results(limit=1000) if r["id"].startswith("r")}
        assert sorted(old) == [f"r{i}" for i in range(5)]
        for r in old.values():
            assert r["label"] == "Pre" and r["sample_id"] == "s1" and r["um_per_px"] is None
            assert s.has_image(r["image_sha256"])
        assert s.get_sample("s1")["slide_id"] == "LAB-1"
    finally:
        s.close()
    assert (data / DEVICE_ID_NAME).read_text().strip() == OLD_ID
    models = data / "models"
    assert {
        str(p.relative_to(models)): p.read_bytes() for p in models.rglob("*") if p.is_file()
    } == models_before
    assert os.readlink(models / "old") == ".versions/old/1"


def test_daemon_upgrades_the_oldest_data_directory(tmp_path, tiny_bundle, sample_images):
    models_before = old_release_data_dir(tmp_path / "data")
    port = free_port()
    cfg = write_config(tmp_path, tiny_bundle, sample_images[0].parent, port)
    p = start(cfg, tmp_path)
    try:
        assert wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 60)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    assert p.returncode == 0, p.stdout.read()
    check_upgraded(tmp_path / "data", models_before)


def test_backup_of_the_oldest_schema_restores_and_migrates(tmp_path, monkeypatch, capsys):
    data = tmp_path / "var" / "data"
    models_before = old_release_data_dir(data)
    monkeypatch.setenv("SMEARSCOPE_MODELS_DIR", str(data / "models"))
    info = run_backup(data, tmp_path / "backups", config_file=None, models=data / "models", keep=0)
    assert info["schema_version"] == 1
    (data / "smearscope.db").unlink()
    config = tmp_path / "config.toml"
    config.write_text(f'[device]\ndata_dir = "{data}"\n')
    assert main(["restore", "--config", str(config), info["path"]]) == 0
    assert f"schema 1 -> {len(MIGRATIONS)}" in capsys.readouterr().out
    check_upgraded(data, models_before)
