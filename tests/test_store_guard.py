"""The store defends its data: a lost, emptied, garbled or foreign database in a data directory where a
station lived is refused with one message and exit status 3 (never a silent new station), the device
id lives in `device-id` too, and one process at a time owns a data directory (flock)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device.cli import main as cli_main
from device.store import DataDirBusy, Store, StoreDamaged
from device.store import lock as datadir_lock
from device.store.guard import DEVICE_ID_NAME, inspect_db
from device.store.lock import EXIT_NEEDS_ADMIN, LOCK_NAME
from tests.test_daemon import free_port, get, start, wait_for, write_config

PROBS = {"Benign": 0.9, "Pre": 0.1}


def make_station(data: Path, n: int = 40) -> str:
    """A station with n records (each with its own image); returns its device id."""
    s = Store(data, reserve_bytes=0)
    for i in range(n):
        sha, size = s.write_image(b"\xff\xd8 jpeg %d " % i + b"x" * 2000)
        s.add_result(
            {"source": "camera", "label": "Benign", "probabilities": PROBS, "image_sha256": sha},
            images=[(sha, size)],
        )
    device_id = s.device_id
    s.close()
    for suffix in ("-wal", "-shm"):
        assert not (data / f"smearscope.db{suffix}").exists()  # checkpointed: the .db holds it all
    return device_id


def finish(p: subprocess.Popen, timeout: float = 60) -> str:
    """The output of a process expected to exit by itself (killed if it serves on instead)."""
    try:
        return p.communicate(timeout=timeout)[0]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def refusal(data: Path) -> str:
    with pytest.raises(StoreDamaged) as err:
        Store(data, reserve_bytes=0)
    assert err.value.exit_status == EXIT_NEEDS_ADMIN
    return str(err.value)


def test_fresh_directory_starts_and_writes_device_id(tmp_path):
    s = Store(tmp_path / "data", reserve_bytes=0)
    assert (tmp_path / "data" / DEVICE_ID_NAME).read_text().strip() == s.device_id
    s.close()
    assert Store(tmp_path / "data").device_id == s.device_id


def test_zero_length_db_with_images_is_refused_and_left_alone(tmp_path):
    data = tmp_path / "data"
    make_station(data)
    (data / "smearscope.db").write_bytes(b"")
    (data / DEVICE_ID_NAME).unlink()  # the images alone are evidence enough
    msg = refusal(data)
    assert "is empty" in msg and "holds images" in msg and "smearscope restore" in msg
    assert (data / "smearscope.db").stat().st_size == 0  # no new station made in its place
    assert not (data / DEVICE_ID_NAME).exists()


def test_garbage_in_interior_pages_is_refused(tmp_path):
    data = tmp_path / "data"
    make_station(data)
    db = data / "smearscope.db"
    raw = bytearray(db.read_bytes())
    page = int.from_bytes(raw[16:18], "big")
    assert len(raw) >= 6 * page
    raw[2 * page : len(raw) - page] = b"\xa5" * (len(raw) - 3 * page)  # keep the header page and the last
    db.write_bytes(bytes(raw))
    assert inspect_db(db).state == "corrupt"
    msg = refusal(data)
    assert "is damaged" in msg and "smearscope restore" in msg and "permissions" not in msg


def test_garbled_header_is_refused_as_damage_not_permissions(tmp_path):
    data = tmp_path / "data"
    make_station(data)
    db = data / "smearscope.db"
    raw = bytearray(db.read_bytes())
    raw[0:16] = b"garbled-garbled!"
    db.write_bytes(bytes(raw))
    msg = refusal(data)
    assert "header" in msg and "smearscope restore" in msg and "permissions" not in msg


def test_missing_db_with_device_id_file_is_refused(tmp_path):
    data = tmp_path / "data"
    device_id = make_station(data)
    (data / "smearscope.db").unlink()
    for f in (data / "images").rglob("*.jpg"):
        f.unlink()
    msg = refusal(data)
    assert "is missing" in msg and device_id in msg
    assert not (data / "smearscope.db").exists()


def test_another_stations_database_is_refused(tmp_path):
    make_station(tmp_path / "a", n=1)
    other = make_station(tmp_path / "b", n=1)
    (tmp_path / "b" / "smearscope.db").replace(tmp_path / "a" / "smearscope.db")
    msg = refusal(tmp_path / "a")
    assert other in msg and "another station" in msg


def test_existing_station_without_device_id_file_gets_one(tmp_path):
    """Data directories made before the file existed: the database's id is written out."""
    data = tmp_path / "data"
    device_id = make_station(data, n=2)
    (data / DEVICE_ID_NAME).unlink()
    s = Store(data, reserve_bytes=0)
    assert s.device_id == device_id and len(s.list_results()) == 2
    s.close()
    assert (data / DEVICE_ID_NAME).read_text().strip() == device_id


def test_command_exit_status_is_3(tmp_path, capsys):
    data = tmp_path / "data"
    make_station(data, n=1)
    (data / "smearscope.db").write_bytes(b"")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[device]\ndata_dir = "{data}"\n')
    assert cli_main(["users", "list", "--config", str(cfg)]) == EXIT_NEEDS_ADMIN
    assert "smearscope restore" in capsys.readouterr().err


def test_lock_refuses_a_second_holder_and_dies_with_its_process(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    code = (
        "import sys, time; from device.store import lock; "
        f"lock.acquire({str(data)!r}, 'holder'); print('held', flush=True); time.sleep(60)"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(DataDirBusy) as err:
            datadir_lock.acquire(data, "test")
        assert f"pid {p.pid} (holder)" in str(err.value)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    with datadir_lock.holding(data, "test"):  # the kernel released it with the process
        assert datadir_lock.held_here(data)
    assert not datadir_lock.held_here(data)
    assert (data / LOCK_NAME).is_file()


def test_second_daemon_on_one_data_dir_refuses(tmp_path, tiny_bundle, sample_images):
    port = free_port()
    cfg = write_config(tmp_path, tiny_bundle, sample_images[0].parent, port)
    first = start(cfg, tmp_path)
    try:
        assert wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 60)
        cfg2 = tmp_path / "second.toml"  # same data_dir, another port
        cfg2.write_text(cfg.read_text().replace(f"port = {port}", f"port = {free_port()}"))
        t0 = time.monotonic()
        second = start(cfg2, tmp_path)
        out = finish(second)
        assert second.returncode == EXIT_NEEDS_ADMIN, out
        assert f"pid {first.pid} (smearscope run)" in out and "systemctl stop smearscope" in out
        assert time.monotonic() - t0 < 30
        assert first.poll() is None and get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    finally:
        first.send_signal(signal.SIGTERM)
        finish(first, 15)


def test_daemon_refuses_an_emptied_store(tmp_path, tiny_bundle, sample_images):
    make_station(tmp_path / "data", n=2)
    (tmp_path / "data" / "smearscope.db").write_bytes(b"")
    cfg = write_config(tmp_path, tiny_bundle, sample_images[0].parent, free_port())
    p = start(cfg, tmp_path)
    out = finish(p)
    assert p.returncode == EXIT_NEEDS_ADMIN, out
    assert "is empty" in out and "smearscope restore" in out and "Traceback" not in out


def test_unit_does_not_restart_on_exit_3():
    unit = (Path(__file__).resolve().parents[1] / "systemd" / "smearscope.service").read_text()
    (line,) = [ln for ln in unit.splitlines() if ln.startswith("RestartPreventExitStatus=")]
    assert str(EXIT_NEEDS_ADMIN) in line.split("=", 1)[1].split()
