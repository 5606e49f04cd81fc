"""Logging that journald understands: `<N>` syslog priority prefixes when stderr is the journal.

systemd sets JOURNAL_STREAM to "<device>:<inode>" of the stream it connected to stdout/stderr; when
stderr is that stream, a line starting with `<3>` is stored at priority 3 (err), so `journalctl -p
warning -u smearscope` works. journald adds its own timestamp, so none is printed there. Anywhere
else (a terminal, a pipe, a test) lines get the usual `time LEVEL name: message` form.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

# syslog priorities (sd-daemon.h): emerg 0 … debug 7
PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER_NAME = "smearscope-stderr"


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (levels between the named ones round down)."""
    for level in sorted(PRIORITY, reverse=True):
        if levelno >= level:
            return PRIORITY[level]
    return 7


class JournalFormatter(logging.Formatter):
    """`<priority>name: message`; every line of a multi-line message (a traceback) gets the prefix,
    so journald does not store the continuation lines at the default priority."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.splitlines() or [""])


def under_journal(stream: TextIO | None = None, env: Mapping[str, str] | None = None) -> bool:
    """True when `stream` (default stderr) is the journal stream systemd connected us to."""
    env = os.environ if env is None else env
    value = env.get("JOURNAL_STREAM", "")
    if not value:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        dev, ino = (int(x) for x in value.split(":", 1))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(
    verbose: bool = False,
    *,
    stream: TextIO | None = None,
    env: Mapping[str, str] | None = None,
    journal: bool | None = None,
) -> logging.Handler:
    """Configure the root logger (replacing the handler an earlier call added). `journal` forces
    the format; None detects it."""
    stream = sys.stderr if stream is None else stream
    if journal is None:
        journal = under_journal(stream, env)
    handler = logging.StreamHandler(stream)
    fmt = JournalFormatter("%(name)s: %(message)s") if journal else logging.Formatter(PLAIN_FORMAT)
    handler.setFormatter(fmt)
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):  # only our own earlier handler: leave others' (pytest's) alone
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler
