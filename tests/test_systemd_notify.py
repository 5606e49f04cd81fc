"""What systemd sees of `smearscope run` started the way smearscope.service starts it (Type=notify,
WatchdogSec, stderr connected to the journal): READY=1, periodic WATCHDOG=1, STOPPING=1 on SIGTERM
with a clean exit, and log lines with `<N>` priority prefixes. systemd is played by this test: a
datagram socket at $NOTIFY_SOCKET and a file whose device:inode is $JOURNAL_STREAM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device.models import modelstore

SMEARSCOPE = Path(sys.prefix) / "bin" / "smearscope"


def _trust() -> dict[str, str]:
    """The fixture bundles' test key stays trusted in the child (conftest.py sets it)."""
    return {k: v for k, v in os.environ.items() if k == "SMEARSCOPE_TRUSTED_KEYS"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _receive(sock: socket.socket, want: str, deadline: float, proc: subprocess.Popen) -> list[str]:
    """Collect notify messages until one contains `want` (or the process dies / time runs out)."""
    got: list[str] = []
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            msg = sock.recv(4096).decode()
        except TimeoutError:
            continue
        got.append(msg)
        if want in msg:
            return got
    raise AssertionError(f"no {want!r} from smearscope run (exit {proc.poll()}); got {got}")


@pytest.mark.skipif(not SMEARSCOPE.exists(), reason="smearscope entry point not installed")
def test_run_speaks_sd_notify_and_journal(tiny_bundle: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    modelstore.install(tiny_bundle, models, log=lambda _m: None)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[device]\ndata_dir = "{tmp_path / "data"}"\n[camera]\nsource = "replay"\nfps = 5.0\n'
        f'[web]\nhost = "127.0.0.1"\nport = {_free_port()}\n'
    )
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.5)
    log_path = tmp_path / "journal.txt"
    with open(log_path, "w+b") as journal:
        st = os.fstat(journal.fileno())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SMEARSCOPE_", "WATCHDOG_"))}
        env.update(_trust())
        env.update(
            SMEARSCOPE_MODELS_DIR=str(models),
            NOTIFY_SOCKET=str(sock_path),
            WATCHDOG_USEC="2000000",  # WatchdogSec=2: pings expected about every second
            JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}",
            PYTHONUNBUFFERED="1",
        )
        proc = subprocess.Popen(
            [str(SMEARSCOPE), "run", "--config", str(config)],
            stdout=journal,
            stderr=journal,
            env=env,
            cwd=tmp_path,
        )
        try:
            got = _receive(sock, "READY=1", time.monotonic() + 120, proc)
            got += _receive(sock, "WATCHDOG=1", time.monotonic() + 30, proc)
            got += _receive(sock, "WATCHDOG=1", time.monotonic() + 30, proc)
            proc.send_signal(signal.SIGTERM)
            got += _receive(sock, "STOPPING=1", time.monotonic() + 30, proc)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            sock.close()
    assert sum("WATCHDOG=1" in m for m in got) >= 2
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    ours = [ln for ln in lines if ln.startswith("<") and ">" in ln[:4]]
    assert ours, lines[:20]
    assert any(ln.startswith("<6>") for ln in ours)  # info lines at priority 6
    # nothing of ours in the plain `time LEVEL name:` format (the journal adds its own timestamp)
    assert not [ln for ln in lines if " INFO device" in ln or " INFO smearscope" in ln]


def test_notify_socket_is_optional() -> None:
    """Outside systemd nothing is sent and nothing fails."""
    from device.notify import notify

    saved = os.environ.pop("NOTIFY_SOCKET", None)
    try:
        assert notify("READY=1") is False
    finally:
        if saved is not None:
            os.environ["NOTIFY_SOCKET"] = saved


@pytest.mark.skipif(not SMEARSCOPE.exists(), reason="smearscope entry point not installed")
def test_tampered_bundle_exits_2_with_an_error_priority(tiny_bundle: Path, tmp_path: Path) -> None:
    """Exit 2 is what the unit's RestartPreventExitStatus=2 expects; journald files the reason as an error."""
    model = tiny_bundle / "model.tflite"
    data = bytearray(model.read_bytes())
    data[300] ^= 0xFF
    model.write_bytes(bytes(data))
    config = tmp_path / "config.toml"
    config.write_text(
        f'[device]\ndata_dir = "{tmp_path / "data"}"\n[camera]\nsource = "replay"\n'
        f'[classifier]\nmodels = ["{tiny_bundle}"]\n[web]\nport = {_free_port()}\n'
    )
    with open(tmp_path / "journal.txt", "w+b") as journal:
        st = os.fstat(journal.fileno())
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMEARSCOPE_")}
        env.update(_trust())
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        rc = subprocess.run(
            [str(SMEARSCOPE), "run", "--config", str(config)],
            stdout=journal,
            stderr=journal,
            env=env,
            timeout=120,
        ).returncode
        journal.seek(0)
        lines = journal.read().decode(errors="replace").splitlines()
    assert rc == 2
    errors = [ln for ln in lines if ln.startswith("<3>smearscope run: error:")]
    assert errors and "sha256" in errors[0], lines
