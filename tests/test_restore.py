"""`smearscope restore`: a backup checked in full before anything is touched, staged, swapped in by
rename, the old data kept; refused while the daemon runs, for a newer schema and for a damaged backup
(the old data untouched, no staging left behind)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from device.cli import main
from device.commands.backup import run_backup
from device.store import Store
from device.store.guard import DEVICE_ID_NAME
from device.store.lock import EXIT_NEEDS_ADMIN, LOCK_NAME
from device.store.migrations import MIGRATIONS

PROBS = {"Benign": 0.9, "Pre": 0.1}
REPO = Path(__file__).resolve().parents[1]


def add_records(data: Path, n: int, start: int = 0) -> list[str]:
    s = Store(data, reserve_bytes=0)
    ids = []
    for i in range(start, start + n):
        sha, size = s.write_image(b"\xff\xd8 jpeg %d " % i + b"y" * 3000)
        r = s.add_result(
            {"source": "upload", "label": "Pre", "probabilities": PROBS, "image_sha256": sha},
            images=[(sha, size)],
        )
        ids.append(r["id"])
    s.close()
    return ids


@pytest.fixture
def station(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A data directory with records, images, profiles and installed models (a version link), its
    config, and one backup of it."""
    data = tmp_path / "var" / "smearscope"
    ids = add_records(data, 12)
    (data / "profiles.toml").write_text('schema_version = 1\nactive = "a"\n')
    models = data / "models"
    (models / ".versions" / "b" / "1").mkdir(parents=True)
    (models / ".versions" / "b" / "1" / "model.tflite").write_bytes(b"model bytes")
    os.symlink(".versions/b/1", models / "b")
    (models / "DEFAULT").write_text("b\n")
    monkeypatch.setenv("SMEARSCOPE_MODELS_DIR", str(models))
    config = tmp_path / "config.toml"
    config.write_text(f'[device]\ndata_dir = "{data}"\n')
    info = run_backup(
        data,
        tmp_path / "backups",
        config_file=config,
        models=models,
        keep=0,
        profiles=data / "profiles.toml",
    )
    return {"data": data, "ids": ids, "config": config, "backup": Path(info["path"]), "tmp": tmp_path}


def result_ids(data: Path) -> list[str]:
    s = Store(data, reserve_bytes=0)
    try:
        rows = s.list_results(limit=1000)
        assert all(s.has_image(r["image_sha256"]) for r in rows)
        return sorted(r["id"] for r in rows)
    finally:
        s.close()


def restore_cli(st: dict, *extra: str) -> int:
    return main(["restore", "--config", str(st["config"]), *extra, str(st["backup"])])


def snapshot(data: Path) -> dict[str, bytes]:
    """Every file's bytes (the lock file's holder note aside)."""
    files = (p for p in sorted(data.rglob("*")) if p.is_file() and p.name != LOCK_NAME)
    return {str(p.relative_to(data)): p.read_bytes() for p in files}


def test_backup_lists_checksums(station):
    info = json.loads((station["backup"] / "BACKUP.json").read_text())
    assert info["format"] == "smearscope-backup/2" and info["schema_version"] == len(MIGRATIONS)
    db = station["backup"] / "smearscope.db"
    assert info["files"]["smearscope.db"]["sha256"] == hashlib.sha256(db.read_bytes()).hexdigest()
    assert {"profiles.toml", "config.toml", "models/DEFAULT", "models/.versions/b/1/model.tflite"} <= set(
        info["files"]
    )
    assert info["device_id"] == (station["data"] / DEVICE_ID_NAME).read_text().strip()


def test_round_trip_backup_damage_restore(station, capsys):
    data = station["data"]
    device_id = (data / DEVICE_ID_NAME).read_text().strip()
    later = add_records(data, 3, start=100)  # after the backup: kept in the old data only
    (data / "smearscope.db").write_bytes(b"")  # the damage
    assert restore_cli(station) == 0
    out = capsys.readouterr().out
    assert "restored 12 records and 12 images" in out and "kept the station's" in out
    assert result_ids(data) == sorted(station["ids"])
    assert (data / DEVICE_ID_NAME).read_text().strip() == device_id
    assert Store(data).device_id == device_id
    assert os.readlink(data / "models" / "b") == ".versions/b/1"  # the station's models carried across
    assert (data / "models" / "b" / "model.tflite").read_bytes() == b"model bytes"
    assert (data / "profiles.toml").read_text().startswith("schema_version = 1")
    (before,) = data.parent.glob("smearscope.before-restore-*")
    assert (before / "smearscope.db").stat().st_size == 0  # the old data is kept as it was
    assert len(list((before / "images").rglob("*.jpg"))) == 15 and len(later) == 3
    assert not list(data.parent.glob(".smearscope.restore-*"))
    events = [e["message"] for e in Store(data).recent_events(5)]
    assert any(m.startswith("restored from") for m in events)


def test_restore_brings_models_when_the_station_lost_them(station):
    data = station["data"]
    import shutil

    shutil.rmtree(data / "models")
    assert restore_cli(station) == 0
    assert (data / "models" / "b" / "model.tflite").read_bytes() == b"model bytes"
    assert os.path.islink(data / "models" / "b")


def test_restore_onto_a_new_installation(station, tmp_path):
    fresh = tmp_path / "elsewhere" / "data"
    station["config"].write_text(f'[device]\ndata_dir = "{fresh}"\n')
    assert restore_cli(station) == 0
    assert result_ids(fresh) == sorted(station["ids"])
    assert not list(fresh.parent.glob("data.before-restore-*"))


def test_restore_refused_while_the_daemon_runs(station):
    data = station["data"]
    code = (
        "import time; from device.store import lock; "
        f"lock.acquire({str(data)!r}, 'smearscope run'); print('held', flush=True); time.sleep(60)"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert p.stdout.readline().strip() == "held"
        before = snapshot(data)
        assert restore_cli(station) == EXIT_NEEDS_ADMIN
        assert snapshot(data) == before
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)


def _rewrite_manifest(backup: Path, rel: str) -> None:
    info = json.loads((backup / "BACKUP.json").read_text())
    info["files"][rel]["sha256"] = hashlib.sha256((backup / rel).read_bytes()).hexdigest()
    info["files"][rel]["size"] = (backup / rel).stat().st_size
    (backup / "BACKUP.json").write_text(json.dumps(info))


def _newer_schema(backup: Path) -> None:
    with sqlite3.connect(backup / "smearscope.db") as c:
        c.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    c.close()
    _rewrite_manifest(backup, "smearscope.db")


def _bad_image(backup: Path) -> None:
    img = sorted((backup / "images").rglob("*.jpg"))[3]
    img.write_bytes(img.read_bytes()[:-1] + b"!")


def _missing_image(backup: Path) -> None:
    sorted((backup / "images").rglob("*.jpg"))[5].unlink()


def _bad_checksum(backup: Path) -> None:
    (backup / "profiles.toml").write_text("changed after the backup\n")


def _interior_garbage(backup: Path) -> None:
    db = backup / "smearscope.db"
    raw = bytearray(db.read_bytes())
    page = int.from_bytes(raw[16:18], "big")
    raw[2 * page : len(raw) - page] = b"\x5a" * (len(raw) - 3 * page)
    db.write_bytes(bytes(raw))
    _rewrite_manifest(backup, "smearscope.db")


def _partial(backup: Path) -> None:
    backup.rename(backup.with_name(f".{backup.name}.partial"))


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_newer_schema, "newer than this smearscope"),
        (_bad_image, "do not match its name"),
        (_missing_image, "not in the backup"),
        (_bad_checksum, "does not match its checksum"),
        (_interior_garbage, "the backup is damaged"),
        (_partial, "unfinished backup"),
    ],
)
def test_a_bad_backup_is_refused_and_the_data_untouched(station, capsys, damage, says):
    data = station["data"]
    damage(station["backup"])
    if damage is _partial:
        station["backup"] = station["backup"].with_name(f".{station['backup'].name}.partial")
    before = snapshot(data)
    assert restore_cli(station) == 2
    assert says in capsys.readouterr().err
    assert snapshot(data) == before
    assert sorted(p.name for p in data.parent.iterdir()) == ["smearscope"]  # no staging, nothing renamed


def test_check_only_changes_nothing(station, capsys):
    before = snapshot(station["data"])
    assert restore_cli(station, "--check") == 0
    assert "12 images match their sha256" in capsys.readouterr().out
    assert snapshot(station["data"]) == before


def test_backup_of_an_older_release_without_checksums(station, capsys):
    info = json.loads((station["backup"] / "BACKUP.json").read_text())
    for key in ("files", "format", "schema_version", "device_id"):
        info.pop(key)
    (station["backup"] / "BACKUP.json").write_text(json.dumps(info))
    assert restore_cli(station, "--check") == 0
    assert "no checksum list" in capsys.readouterr().out
    assert restore_cli(station) == 0
    assert result_ids(station["data"]) == sorted(station["ids"])


def test_restore_without_renameat2(station, monkeypatch):
    """Kernels or file systems without RENAME_EXCHANGE: two renames, the old data moved out first."""
    monkeypatch.setattr("device.store.restore.exchange", lambda a, b: False)
    (station["data"] / "smearscope.db").write_bytes(b"")
    assert restore_cli(station) == 0
    assert result_ids(station["data"]) == sorted(station["ids"])
    (before,) = station["data"].parent.glob("smearscope.before-restore-*")
    assert (before / "smearscope.db").stat().st_size == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_restore_as_root_gives_the_store_to_the_service_user(station):
    import pwd

    nobody = pwd.getpwnam("nobody")
    assert restore_cli(station, "--owner", "nobody") == 0
    data = station["data"]
    for p in [data, data / "smearscope.db", data / "device-id", *(data / "images").rglob("*")]:
        assert (p.stat().st_uid, p.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid), p
    assert (data / "models" / "DEFAULT").stat().st_uid == 0  # models stay root's, as installed
