"""`smearscope sync --once`: push the outbox to the hub now and print a JSON summary.

Exit status 0 only when nothing is left pending (quarantined records do not count as pending: they
are listed with the hub's reason). Without --once it runs the sync worker in the foreground.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time

from device.config import add_config_args, config_from_args
from device.errors import SmearscopeError
from device.store import Store
from device.sync import HubClient, HubError, Outbox, SyncBusy, Syncer, SyncWorker
from device.sync.worker import BACKOFF_BASE_S, SyncSummary, backoff_delay


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync", help="push results and images to the hub ([sync] in the config)")
    add_config_args(p, web=False)
    p.add_argument("--once", action="store_true", help="one push now; exit 0 only when nothing is pending")
    p.add_argument("--hub-url", help="override [sync] hub_url")
    p.add_argument("--batch-size", type=int, help="override [sync] batch_size")
    p.add_argument(
        "--retries", type=int, default=2, help="--once: attempts after a network failure (default 2)"
    )
    p.add_argument("--retry-rejected", action="store_true", help="put quarantined records back in the queue")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.hub_url:
        config.sync.hub_url = args.hub_url
    if args.batch_size:
        config.sync.batch_size = args.batch_size
    if not config.sync.hub_url:
        raise SmearscopeError("no hub: set [sync] hub_url in the config (or pass --hub-url)")
    if not config.sync.token:
        raise SmearscopeError("no hub token: set SMEARSCOPE_SYNC_TOKEN (or [sync] token)")
    store = Store.from_config(config)
    try:
        outbox = Outbox(store)
        if args.retry_rejected:
            outbox.retry_rejected()
        if args.once:
            return _once(outbox, config, args.retries)
        config.sync.enabled = True
        return _forever(config, store)
    finally:
        store.close()


def _once(outbox: Outbox, config, retries: int) -> int:  # noqa: ANN001
    client = HubClient.from_config(config.sync)
    total = SyncSummary()
    rng = random.Random()
    try:
        for attempt in range(retries + 1):
            try:
                s = Syncer(outbox, client, config.sync.batch_size).run(wait_s=30.0)
                total.error = None
            except SyncBusy as exc:
                s = SyncSummary(error=str(exc), counts=outbox.counts())
                total.error = str(exc)
            except HubError as exc:
                s = exc.summary  # type: ignore[attr-defined]
                total.error = str(exc)
            _add(total, s)
            if total.error is None and total.counts.get("pending", 0) == 0:
                break
            if attempt < retries and total.error is not None:
                time.sleep(backoff_delay(attempt + 1, BACKOFF_BASE_S / 2, 10.0, rng))
    finally:
        client.close()
    out = total.to_dict()
    out["rejected_recent"] = outbox.rejected(10)
    print(json.dumps(out, indent=2), flush=True)
    if out["pending"]:
        print(f"smearscope sync: {out['pending']} record(s) still pending", file=sys.stderr)
    return 0 if out["pending"] == 0 else 1


def _add(total: SyncSummary, s: SyncSummary) -> None:
    for k in (
        "sent",
        "accepted",
        "duplicate",
        "deferred",
        "rejected_now",
        "images_sent",
        "images_skipped",
        "batches",
    ):
        setattr(total, k, getattr(total, k) + getattr(s, k))
    total.seconds = round(total.seconds + s.seconds, 3)
    total.counts = s.counts
    total.clock_skew_s = s.clock_skew_s if s.clock_skew_s is not None else total.clock_skew_s


def _forever(config, store: Store) -> int:  # noqa: ANN001
    worker = SyncWorker(config, store)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    worker.start()
    try:
        while not done.wait(config.sync.interval_s):
            print(json.dumps(worker.status()), flush=True)
    except KeyboardInterrupt:
        pass
    worker.stop()
    return 0
