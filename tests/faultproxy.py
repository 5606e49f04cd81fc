"""A fault-injecting TCP proxy for the sync tests (loopback only).

Each accepted connection gets one fate, drawn with the configured probabilities:
- ``drop``: closed at once (the client sees the connection closed before any answer);
- ``reset``: closed with a TCP RST (SO_LINGER 0);
- ``delay``: forwarded after a pause;
- ``http500``: answered ``500`` by the proxy, the hub never sees the request;
- ``http500_after``: forwarded, then the hub's answer is thrown away and ``500`` sent instead (the hub
  DID process it: the nastiest case for exactly-once);
- ``reset_after``: forwarded, then reset as the hub's answer starts to arrive (answer lost);
- otherwise forwarded untouched.
``down = True`` drops every connection (a hub that cannot be reached).
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import struct
import threading
import time
from collections import Counter

FATES = ("drop", "reset", "delay", "http500", "http500_after", "reset_after")
_500 = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n"
    b"Connection: close\r\n\r\nfault\n"
)


class FaultProxy:
    def __init__(
        self, upstream_port: int, *, seed: int = 0, delay_s: tuple[float, float] = (0.05, 0.3), **p: float
    ):
        unknown = set(p) - set(FATES)
        if unknown:
            raise ValueError(f"unknown fates {unknown}")
        self.upstream = ("127.0.0.1", upstream_port)
        self.p = {f: float(p.get(f, 0.0)) for f in FATES}
        self.delay_s = delay_s
        self.down = False
        self.stats: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="faultproxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, **p: float) -> None:
        with self._lock:
            for f in FATES:
                self.p[f] = float(p.get(f, 0.0))

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fate(self) -> str:
        with self._lock:
            if self.down:
                return "drop"
            x = self._rng.random()
            for f in FATES:
                if x < self.p[f]:
                    return f
                x -= self.p[f]
            return "pass"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            fate = self._fate()
            self.stats[fate] += 1
            threading.Thread(target=self._handle, args=(client, fate), daemon=True).start()

    def _handle(self, client: socket.socket, fate: str) -> None:
        try:
            if fate == "drop":
                return
            if fate == "reset":
                _rst(client)
                return
            if fate == "http500":
                client.settimeout(5)
                with contextlib.suppress(OSError):
                    client.recv(65536)
                    client.sendall(_500)
                return
            if fate == "delay":
                with self._lock:
                    pause = self._rng.uniform(*self.delay_s)
                time.sleep(pause)
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _rst(client)  # the hub is not running: like an unreachable host
                return
            with upstream:
                self._forward(client, upstream, fate)
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _forward(self, client: socket.socket, upstream: socket.socket, fate: str) -> None:
        """Copy bytes both ways in this one thread (select), so a reset really is a reset: no other
        thread may sit in recv() on the client socket when it is closed."""
        open_from_client = True
        while True:
            readable, _, _ = select.select([client, upstream] if open_from_client else [upstream], [], [], 30)
            if not readable:
                return
            if upstream in readable:
                data = _recv(upstream)
                if fate in ("http500_after", "reset_after") and data:
                    # the hub has processed the request and is answering: lose that answer
                    if fate == "http500_after":
                        with contextlib.suppress(OSError):
                            client.sendall(_500)
                    else:
                        _rst(client)
                    return
                if not data:
                    return
                try:
                    client.sendall(data)
                except OSError:
                    return
            if open_from_client and client in readable:
                data = _recv(client)
                try:
                    if data:
                        upstream.sendall(data)
                    else:
                        open_from_client = False
                        upstream.shutdown(socket.SHUT_WR)
                except OSError:
                    return


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _rst(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
