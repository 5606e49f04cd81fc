"""`smearscope doctor` on a healthy and on broken stations: exit status and what it says to fix."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from device.cli import main
from device.store.db import connect, migrate
from device.store.store import DB_NAME


@pytest.fixture
def station(tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A models dir holding the tiny bundle, a data dir, and a config file using them."""
    models = tmp_path / "models"
    shutil.copytree(tiny_bundle, models / "tiny")
    monkeypatch.setenv("SMEARSCOPE_MODELS_DIR", str(models))
    monkeypatch.delenv("SMEARSCOPE_SYNC_TOKEN", raising=False)
    (tmp_path / "data").mkdir()
    return tmp_path


def _config(station: Path, extra: str = "") -> Path:
    path = station / "config.toml"
    path.write_text(f'[device]\ndata_dir = "{station / "data"}"\n[camera]\nsource = "replay"\n{extra}')
    return path


def _doctor(config: Path, capsys, *more: str) -> tuple[int, dict]:
    rc = main(["doctor", "--config", str(config), "--no-system", "--json", *more])
    return rc, json.loads(capsys.readouterr().out)


def _by_area(report: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for c in report["checks"]:
        out.setdefault(c["area"], []).append(c)
    return out


def test_healthy_station(station: Path, capsys) -> None:
    rc, report = _doctor(_config(station), capsys)
    areas = _by_area(report)
    assert rc == 0 and report["ok"]
    assert {"config", "runtime", "models", "camera", "disk", "clock", "hub", "service"} <= set(areas)
    assert areas["models"][0]["status"] == "ok" and "tiny-mobilenetv2-int8" in areas["models"][0]["message"]
    assert areas["camera"][0]["status"] == "ok"
    assert areas["hub"][0]["status"] == "skip"
    assert not [c for c in report["checks"] if c["status"] == "fail"]


def test_healthy_station_text_output(station: Path, capsys) -> None:
    assert main(["doctor", "--config", str(_config(station)), "--no-system"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("OK ") and "models" in out.out
    assert "all checks passed" in out.err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_broken_station_says_what_to_fix(station: Path, capsys) -> None:
    model = station / "models" / "tiny" / "model.tflite"
    data = bytearray(model.read_bytes())
    data[200] ^= 0xFF
    model.write_bytes(bytes(data))
    hub = f"http://127.0.0.1:{_closed_port()}"
    config = _config(station, f'[sync]\nenabled = true\nhub_url = "{hub}"\ntoken = "t"\ntimeout_s = 2.0\n')
    assert main(["doctor", "--config", str(config), "--no-system"]) == 1
    out = capsys.readouterr().out
    assert "FAIL models" in out and "sha256" in out
    assert "FAIL hub" in out and "unreachable" in out
    assert out.count("fix:") >= 2
    assert "smearscope models install" in out or "rollback" in out


def test_no_models(station: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMEARSCOPE_MODELS_DIR", str(station / "empty"))
    rc, report = _doctor(_config(station), capsys)
    models = _by_area(report)["models"][0]
    assert rc == 1 and models["status"] == "fail" and "models install" in models["fix"]


def test_bad_config_key_is_named(station: Path, capsys) -> None:
    rc, report = _doctor(_config(station, "[web]\nprot = 1\n"), capsys)
    assert rc == 1
    assert report["checks"][0]["area"] == "config" and "prot" in report["checks"][0]["message"]


def test_missing_replay_folder(station: Path, capsys) -> None:
    config = _config(station)
    config.write_text(config.read_text() + f'path = "{station / "nope"}"\n')
    rc, report = _doctor(config, capsys)
    assert rc == 1 and _by_area(report)["camera"][0]["status"] == "fail"


def test_missing_usb_camera(station: Path, capsys) -> None:
    config = (
        _config(station).read_text().replace('source = "replay"', 'source = "opencv"\ndevice = "/dev/nope0"')
    )
    (station / "config.toml").write_text(config)
    rc, report = _doctor(station / "config.toml", capsys)
    cam = _by_area(report)["camera"][0]
    assert rc == 1 and cam["status"] == "fail" and "/dev/nope0" in cam["message"] and cam["fix"]


def test_camera_check_can_be_skipped(station: Path, capsys) -> None:
    config = (
        _config(station).read_text().replace('source = "replay"', 'source = "opencv"\ndevice = "/dev/nope0"')
    )
    (station / "config.toml").write_text(config)
    rc, report = _doctor(station / "config.toml", capsys, "--no-camera")
    assert rc == 0 and _by_area(report)["camera"][0]["status"] == "skip"


def test_clock_behind_the_store_fails(station: Path, capsys) -> None:
    conn = connect(station / "data" / DB_NAME)
    migrate(conn)
    conn.execute(
        "INSERT INTO results (id, device_id, captured_at, source, label) VALUES (?, ?, ?, ?, ?)",
        ("r1", "d", "2099-01-01T00:00:00.000Z", "camera", "Pre"),
    )
    conn.close()
    rc, report = _doctor(_config(station), capsys)
    clock = _by_area(report)["clock"][0]
    assert rc == 1 and clock["status"] == "fail" and "backwards" in clock["message"]


class _Hub(BaseHTTPRequestHandler):
    token = "good-token"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/healthz":
            code = 200
        elif self.path == "/api/v1/ping":
            code = 200 if self.headers.get("Authorization") == f"Bearer {self.token}" else 401
        else:
            code = 404
        body = b"{}"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_hub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("token", "status", "words"), [("good-token", "ok", "accepted"), ("bad", "fail", "401")]
)
def test_hub_token(station: Path, capsys, fake_hub: str, token: str, status: str, words: str) -> None:
    config = _config(station, f'[sync]\nenabled = true\nhub_url = "{fake_hub}"\ntoken = "{token}"\n')
    rc, report = _doctor(config, capsys)
    hub = _by_area(report)["hub"][0]
    assert hub["status"] == status and words in hub["message"]
    assert rc == (0 if status == "ok" else 1)


def test_web_page_check(station: Path, capsys, fake_hub: str) -> None:
    port = fake_hub.rsplit(":", 1)[1]  # anything answering /healthz with 200 stands in for the page
    rc, report = _doctor(_config(station, f'[web]\nhost = "0.0.0.0"\nport = {port}\n'), capsys)
    assert rc == 0 and _by_area(report)["web"][0]["status"] == "ok"
    rc, report = _doctor(_config(station, f"[web]\nport = {_closed_port()}\n"), capsys)
    assert rc == 0 and _by_area(report)["web"][0]["status"] == "skip"  # no daemon here: not a failure


def test_doctor_leaves_no_wal_files_behind(station: Path, capsys) -> None:
    """Run as root on a stopped station, a read-only open would create root-owned -wal/-shm files
    that the daemon (another user) then cannot open."""
    db = station / "data" / DB_NAME
    conn = connect(db)
    migrate(conn)
    conn.close()
    assert not Path(f"{db}-wal").exists()
    rc, _ = _doctor(_config(station), capsys)
    assert rc == 0
    assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()


def test_open_live_view_is_pointed_out(station: Path, capsys) -> None:
    rc, report = _doctor(_config(station, "[web]\nopen_live_view = true\n"), capsys)
    notes = [c for c in _by_area(report)["config"] if c["status"] == "warn"]
    assert rc == 0 and notes and "open_live_view" in notes[0]["message"]
