"""Serve the Flask app with waitress, tuned for long-lived streams (MJPEG, Server-Sent Events)."""

from __future__ import annotations

from flask import Flask

#: Each open MJPEG or SSE stream holds one worker thread for as long as it is open.
THREADS = 24


def make_server(app: Flask, host: str, port: int, *, threads: int = THREADS, **kw):
    """A waitress server object (call `.run()`, stop with `.close()`, so the daemon can shut down
    cleanly on SIGTERM). `send_bytes=1` flushes every chunk as it is yielded: waitress otherwise holds
    streamed output until 18 kB accumulate, which delays SSE events; each open stream holds a thread."""
    from waitress.server import create_server

    return create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        send_bytes=1,
        channel_timeout=120,
        ident="smearscope",
        **kw,
    )
