"""A budget for long-lived live streams (MJPEG, Server-Sent Events).

Each open stream holds one of the server's worker threads for as long as it is open, so without a
budget enough viewers (or stalled ones) would leave no thread for `/`, `/login` or `/healthz`. A stream
over budget is refused with 503 and the page falls back to polling a still frame.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class StreamBudget:
    """At most `total` open streams, and at most `per_user` for one user (or one address)."""

    def __init__(self, total: int, per_user: int):
        self.total = total
        self.per_user = per_user
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}

    def open_count(self) -> int:
        with self._lock:
            return sum(self._open.values())

    def has_room(self, who: str) -> bool:
        with self._lock:
            return sum(self._open.values()) < self.total and self._open.get(who, 0) < self.per_user

    def try_acquire(self, who: str) -> Callable[[], None] | None:
        """A release function (idempotent) when a stream may open now, else None."""
        with self._lock:
            if sum(self._open.values()) >= self.total or self._open.get(who, 0) >= self.per_user:
                return None
            self._open[who] = self._open.get(who, 0) + 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if released.is_set():
                    return
                released.set()
                n = self._open.get(who, 0) - 1
                if n > 0:
                    self._open[who] = n
                else:
                    self._open.pop(who, None)

        return release
