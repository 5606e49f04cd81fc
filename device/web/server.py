"""Serve the Flask app with waitress, tuned for long-lived streams (MJPEG, Server-Sent Events).

A viewer that stops reading (a closed laptop lid, a tab on a bad Wi-Fi link) must not hold a worker
thread and a growing buffer for minutes: each connection keeps at most `buffer_bytes` unsent, and a
writer that cannot get below that within `write_timeout_s` drops the connection (`StallAwareChannel`).
Together with the stream budget (device/web/streams.py) no number of stalled viewers starves the pages.
"""

from __future__ import annotations

import time

from flask import Flask
from waitress.channel import HTTPChannel
from waitress.utilities import logger

try:  # waitress >= 2
    from waitress.channel import ClientDisconnected
except ImportError:  # pragma: no cover
    from waitress.task import ClientDisconnected  # type: ignore[no-redef]

#: Worker threads. Live streams may hold at most `[web] max_streams` of them (<= 16).
THREADS = 24
WRITE_TIMEOUT_S = 10.0
BUFFER_BYTES = 256 * 1024


class StallAwareChannel(HTTPChannel):
    """An HTTPChannel whose writers wait at most `write_timeout_s` for a reader to make room."""

    write_timeout_s = WRITE_TIMEOUT_S

    def _flush_outbufs_below_high_watermark(self) -> None:
        hwm = self.adj.outbuf_high_watermark
        if self.total_outbufs_len <= hwm:
            return
        deadline = time.monotonic() + self.write_timeout_s
        with self.outbuf_lock:
            self._flush_exception(self._flush_some, do_close=False)
            while self.connected and self.total_outbufs_len > hwm:
                left = deadline - time.monotonic()
                if left <= 0:
                    logger.info("dropping a stalled client (%s unsent bytes)", self.total_outbufs_len)
                    self.will_close = True  # the main loop closes the socket and frees the buffers
                    self.server.pull_trigger()
                    raise ClientDisconnected("stalled reader")
                self.server.pull_trigger()
                self.outbuf_lock.wait(timeout=min(left, 1.0))


def make_server(
    app: Flask,
    host: str,
    port: int,
    *,
    threads: int = THREADS,
    write_timeout_s: float = WRITE_TIMEOUT_S,
    buffer_bytes: int = BUFFER_BYTES,
    **kw,
):
    """A waitress server object (call `.run()`, stop with `.close()`, so the daemon can shut down
    cleanly on SIGTERM). `send_bytes=1` flushes every chunk as it is yielded: waitress otherwise holds
    streamed output until 18 kB accumulate, which delays SSE events; each open stream holds a thread."""
    from waitress.server import create_server

    channel = type("Channel", (StallAwareChannel,), {"write_timeout_s": write_timeout_s})
    server = create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        send_bytes=1,
        channel_timeout=120,
        outbuf_high_watermark=buffer_bytes,
        ident="smearscope",
        # X-Forwarded-* reach the app, which believes them from the loopback proxy only (device/web/proxy.py)
        clear_untrusted_proxy_headers=False,
        **kw,
    )
    # One listening socket gives a server; several (host lists) a MultiSocketServer whose map holds them.
    for srv in [server, *getattr(server, "map", {}).values()]:
        if hasattr(srv, "channel_class"):
            srv.channel_class = channel
    return server
