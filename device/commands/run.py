"""`smearscope run [--config FILE] [--host H] [--port P] [--data-dir DIR] [--model DIR]...`: the daemon.

All workers plus the web server (waitress). SIGTERM/SIGINT stop it cleanly within 5 s with everything
written; under systemd it sends READY=1 once serving and WATCHDOG=1 while the workers are healthy.
A bad config or a tampered/mismatched bundle stops start-up with the reason and exit status 2; a store
that needs a person (database missing, empty, corrupt or another station's while the station's images
or `device-id` are there; the data directory held by another smearscope) with exit status 3.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time

from common.wording import DISCLAIMER
from device.config import Config, add_config_args, config_from_args
from device.errors import SmearscopeError
from device.notify import notify, watchdog_interval_s
from device.store import lock as datadir_lock
from device.web import create_app
from device.web.server import make_server

log = logging.getLogger("smearscope.run")
STOP_BUDGET_S = 4.5


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the microscope daemon (camera, classifier, store, web page)")
    add_config_args(p)
    p.add_argument("--model", action="append", metavar="DIR", help="bundle dir (repeat for an ensemble)")
    p.set_defaults(func=run)


def _watchdog_pinger() -> object | None:
    """systemd WATCHDOG=1 at most every half WATCHDOG_USEC, sent from the pipeline watchdog's
    healthy rounds (so a stuck daemon stops pinging and systemd restarts it)."""
    interval = watchdog_interval_s()
    if interval is None:
        return None
    last = [0.0]

    def ping() -> None:
        now = time.monotonic()
        if now - last[0] >= min(interval, 5.0):
            last[0] = now
            notify("WATCHDOG=1")

    return ping


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.model:
        config.classifier.models = list(args.model)
    # one daemon per data directory (DataDirBusy → exit 3, no systemd restart loop); held until exit
    with datadir_lock.holding(config.device.data_dir, "smearscope run"):
        return _serve(config)


def _serve(config: Config) -> int:
    from device.services import Services

    services = Services(config, notify_watchdog=_watchdog_pinger())  # BundleError → exit 2 in cli
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    app = create_app(config, services)
    try:
        server = make_server(
            app,
            config.web.host,
            config.web.port,
            write_timeout_s=config.web.stream_write_timeout_s,
            buffer_bytes=config.web.stream_buffer_kb * 1024,
        )
    except OSError as exc:
        services.stop(timeout=1.0)
        raise SmearscopeError(
            f"cannot listen on {config.web.host}:{config.web.port} ({exc.strerror or exc}): is another "
            "smearscope running? Stop it or choose another --port"
        ) from exc
    services.start()
    web = threading.Thread(target=server.run, name="smearscope-web", daemon=True)
    web.start()
    host, port = (
        config.web.host,
        server.effective_port if hasattr(server, "effective_port") else config.web.port,
    )
    log.info(
        "serving http://%s:%s/ (data in %s). %s",
        host,
        port,
        config.device.data_dir,
        DISCLAIMER,
    )
    notify(f"READY=1\nSTATUS=serving on {host}:{port}")
    while not stop.wait(0.5):
        if not web.is_alive():
            log.error("the web server stopped; shutting down")
            break
    t0 = time.monotonic()
    notify("STOPPING=1")
    try:
        server.close()
    except Exception:  # noqa: BLE001 - closing must not prevent the data from being written
        log.exception("closing the web server")
    services.stop(timeout=STOP_BUDGET_S - 0.5)
    log.info("stopped in %.1f s", time.monotonic() - t0)
    return 0
