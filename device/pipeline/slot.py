"""Small hand-overs between workers: a size-1 slot that keeps only the newest item, and the
published newest frame/result the web page reads."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most one item. `put` replaces a stale item (counted in `dropped`), never queues."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._cond = threading.Condition()
        self.dropped = 0
        self.closed = False
        self._waiting = 0  # consumers blocked in take()

    def put(self, item: T) -> bool:
        """Store `item`; returns False when it replaced one nobody took."""
        with self._cond:
            replaced = self._item is not None
            if replaced:
                self.dropped += 1
            self._item = item
            self._cond.notify_all()
            return not replaced

    def take(self, timeout: float) -> T | None:
        """The newest item (removing it), or None after `timeout` seconds."""
        with self._cond:
            if self._item is None:
                self._waiting += 1
                self._cond.notify_all()
                try:
                    self._cond.wait_for(lambda: self._item is not None or self.closed, timeout)
                finally:
                    self._waiting -= 1
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def wait_empty(self, timeout: float) -> bool:
        """Block until the consumer took the item (demand-driven producers)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._item is None or self.closed, timeout)

    def wait_demand(self, timeout: float) -> bool:
        """Block until a consumer is waiting in take() on an empty slot: a producer that makes
        frames on demand (unpaced replay) then hands over the freshest possible one."""
        with self._cond:
            return self._cond.wait_for(
                lambda: (self._item is None and self._waiting > 0) or self.closed, timeout
            )

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class Published(Generic[T]):
    """The newest value with a sequence number; readers wait for a newer one (SSE, MJPEG)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._seq = 0
        self._value: T | None = None

    def publish(self, value: T) -> int:
        with self._cond:
            self._seq += 1
            self._value = value
            self._cond.notify_all()
            return self._seq

    def latest(self) -> tuple[int, T] | None:
        with self._cond:
            return (self._seq, self._value) if self._value is not None else None

    def wait(self, after_seq: int, timeout: float) -> tuple[int, T] | None:
        """The newest value once its seq is > `after_seq`, or None after `timeout`."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after_seq and self._value is not None, timeout)
            if self._seq > after_seq and self._value is not None:
                return self._seq, self._value
            return None
