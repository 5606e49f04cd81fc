"""Stalled live-stream viewers must not starve the pages: a stream budget, a write timeout and bounded
buffers, checked with real sockets on loopback that stop reading (issue 13, item 1)."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
import requests

from device.pipeline.live import LiveFrame
from device.store.store import utc_now
from device.web.server import make_server
from tests.webkit import login, make_app

BUFFER = 32 * 1024
TIMEOUT_S = 1.5


@pytest.fixture
def served(tmp_path):
    app, services = make_app(
        tmp_path, open_live_view=True, max_streams=6, max_streams_per_user=6, mjpeg_fps=20
    )
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)  # ~300 kB per JPEG: fills buffers fast
    services.live.publish_frame(LiveFrame(noise, utc_now(), 0))
    server = make_server(app, "127.0.0.1", 0, write_timeout_s=TIMEOUT_S, buffer_bytes=BUFFER)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    stop = threading.Event()

    def frames() -> None:
        i = 0
        while not stop.wait(0.05):
            i += 1
            services.live.publish_frame(LiveFrame(np.roll(noise, i, axis=1), utc_now(), i))

    pusher = threading.Thread(target=frames, daemon=True)
    pusher.start()
    yield app, server, f"http://127.0.0.1:{server.effective_port}"
    stop.set()
    server.close()


def _stalled_stream(base_port: int, path: str) -> tuple[socket.socket, bytes]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(5)
    s.connect(("127.0.0.1", base_port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = s.recv(64)  # the status line; then this viewer never reads again
    return s, head


def _timed_get(url: str) -> tuple[int, float]:
    t0 = time.monotonic()
    r = requests.get(url, timeout=10)
    return r.status_code, time.monotonic() - t0


def test_stalled_viewers_never_starve_pages_and_are_dropped(served):
    app, server, base = served
    port = int(server.effective_port)
    budget = app.extensions["smearscope"].streams
    socks = []
    try:
        heads = []
        for i in range(30):  # more stalled viewers than the server has threads (24)
            path = "/live/stream.mjpg" if i % 2 else "/live/events"
            s, head = _stalled_stream(port, path)
            socks.append(s)
            heads.append(head)
        admitted = [h for h in heads if h.startswith(b"HTTP/1.1 200")]
        refused = [h for h in heads if h.startswith(b"HTTP/1.1 503")]
        assert len(admitted) == 6 and len(refused) == 24
        # the pages answer at once while the admitted streams stall
        for path in ("/healthz", "/login", "/", "/live/frame.jpg", "/live/result.json"):
            code, took = _timed_get(base + path)
            assert code == 200, path
            assert took < 3.0, (path, took)
        # unsent bytes stay bounded per connection (the buffer, one frame and the socket's own)
        time.sleep(0.5)
        queued = sum(ch.total_outbufs_len for ch in list(server.active_channels.values()))
        assert queued < len(socks) * (BUFFER + 400_000)
        # the stalled MJPEG viewers are dropped after the write timeout, freeing their places
        deadline = time.monotonic() + 20
        while budget.open_count() > 3 and time.monotonic() < deadline:  # SSE sends little: may linger
            time.sleep(0.2)
        assert budget.open_count() <= 3
        s, head = _stalled_stream(port, "/live/stream.mjpg")
        socks.append(s)
        assert head.startswith(b"HTTP/1.1 200")
    finally:
        for s in socks:
            s.close()


def test_budget_per_user_and_head_probe(tmp_path):
    app, _ = make_app(tmp_path, max_streams=4, max_streams_per_user=1)
    client = app.test_client()
    login(client)
    first = client.get("/live/events", buffered=False)
    assert first.status_code == 200
    assert client.head("/live/stream.mjpg").status_code == 503  # per-user budget spent
    second = client.get("/live/stream.mjpg")
    assert second.status_code == 503 and second.headers["Retry-After"]
    first.close()
    assert client.head("/live/stream.mjpg").status_code == 200
    assert app.extensions["smearscope"].streams.open_count() == 0
