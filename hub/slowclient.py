"""A deadline for reading a request body under gunicorn. Its gthread workers read the body in the worker
thread with a blocking socket, so a client that sends headers and then trickles (or stops sending) its
body held a thread for good: 4 stalled uploads froze a hub of 2 workers x 2 threads (even /healthz).
waitress (one process) buffers whole requests before a thread sees them and needs none of this.

`BodyDeadline` gives the socket a timeout (a stalled read or write fails after `timeout_s`) and the
whole body a deadline `timeout_s` after the request started (a trickle of a byte every few seconds
fails too); either answers 408 and frees the thread."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from werkzeug.exceptions import RequestTimeout

MESSAGE = "the request body arrived too slowly"


class DeadlineInput:
    """`wsgi.input` that refuses to read past a deadline (RequestTimeout → 408)."""

    def __init__(self, stream: Any, deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream, self._deadline, self._clock = stream, deadline, clock

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._clock() > self._deadline:
            raise RequestTimeout(MESSAGE)
        try:
            return fn(*args)
        except TimeoutError as exc:  # the socket timeout: nothing arrived for timeout_s
            raise RequestTimeout(MESSAGE) from exc

    def read(self, *args: Any) -> bytes:
        return self._call(self._stream.read, *args)

    def readline(self, *args: Any) -> bytes:
        return self._call(self._stream.readline, *args)

    def readlines(self, *args: Any) -> list[bytes]:
        return self._call(self._stream.readlines, *args)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line


class BodyDeadline:
    """WSGI middleware: bound the time a request may take to send its body (see the module doc)."""

    def __init__(self, app: Callable, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.app, self.timeout_s, self.clock = app, timeout_s, clock

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # gunicorn makes it blocking again for the next request
                sock.settimeout(self.timeout_s)
        environ["wsgi.input"] = DeadlineInput(
            environ["wsgi.input"], self.clock() + self.timeout_s, self.clock
        )
        return self.app(environ, start_response)
