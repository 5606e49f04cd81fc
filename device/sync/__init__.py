"""Offline-first sync to the hub: an outbox on the store (per-record state), the HTTP transport and the
worker that pushes images then records, backing off while the hub is unreachable."""

from device.sync.outbox import Outbox, SyncBusy
from device.sync.transport import HubClient, HubError, HubRefused, HubUnreachable
from device.sync.worker import Syncer, SyncSummary, SyncWorker

__all__ = [
    "HubClient",
    "HubError",
    "HubRefused",
    "HubUnreachable",
    "Outbox",
    "SyncBusy",
    "SyncSummary",
    "SyncWorker",
    "Syncer",
]
