"""Logs under systemd carry `<N>` syslog priorities journald understands; elsewhere, plain lines."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from device.logging_setup import priority, setup_logging, under_journal


@pytest.fixture
def logfile(tmp_path: Path):
    root = logging.getLogger()
    level = root.level
    f = open(tmp_path / "log.txt", "w+")  # noqa: SIM115 - closed below
    yield f
    f.close()
    root.setLevel(level)
    for h in list(root.handlers):
        if h.get_name() == "smearscope-stderr":
            root.removeHandler(h)


def _journal_env(f) -> dict[str, str]:
    st = os.fstat(f.fileno())
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def test_priorities() -> None:
    assert [priority(x) for x in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)] == [
        7,
        6,
        4,
        3,
    ]
    assert priority(logging.CRITICAL) == 2 and priority(logging.INFO + 5) == 6


def test_detects_the_journal_stream_only_when_it_is_ours(logfile) -> None:
    assert under_journal(logfile, _journal_env(logfile))
    assert not under_journal(logfile, {"JOURNAL_STREAM": "1:2"})  # inherited by a child with other stderr
    assert not under_journal(logfile, {})
    assert not under_journal(logfile, {"JOURNAL_STREAM": "garbage"})


def test_journal_format(logfile) -> None:
    setup_logging(stream=logfile, env=_journal_env(logfile))
    log = logging.getLogger("smearscope.test")
    log.warning("camera lost")
    log.info("ready")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("worker died")
    logfile.seek(0)
    lines = logfile.read().splitlines()
    assert lines[0] == "<4>smearscope.test: camera lost"
    assert lines[1] == "<6>smearscope.test: ready"
    assert lines[2] == "<3>smearscope.test: worker died"
    tb = lines[3:]
    assert tb and all(ln.startswith("<3>") for ln in tb) and "ValueError: boom" in tb[-1]


def test_plain_format_outside_systemd(logfile) -> None:
    setup_logging(verbose=True, stream=logfile, env={})
    logging.getLogger("x").debug("hello")
    logfile.seek(0)
    line = logfile.read().strip()
    assert line.endswith("DEBUG x: hello") and not line.startswith("<")


def test_setup_twice_keeps_one_handler(logfile) -> None:
    setup_logging(stream=logfile, env={})
    setup_logging(stream=logfile, env={})
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "smearscope-stderr"]
    assert len(ours) == 1
