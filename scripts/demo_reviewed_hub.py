"""Fill a hub with generated slides, model calls and technicians' reviews, through the hub's own API.

    .venv/bin/python scripts/demo_reviewed_hub.py --db sqlite:///demo-hub.db [--slides 16] [--fields 5]
        [--start 2026-11-02] [--seed 0] [--original DIR --original-per-label N]

For trying the fleet loop (docs/training-guide.md) without stations: each slide is one generated "smear"
style (tests/make_tiny_bundle.py), sent by one of the devices (registered when missing) as a sample with
its fields; the "model" is wrong on some fields and unsure on others; a technician reviews most fields
(some twice: a slip corrected later, so the latest review wins). `--original DIR` also writes a generated
"original dataset" (DIR/<label>/*.jpg) to combine with the hub's export. Nothing here means anything
medically.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from make_tiny_bundle import LABELS, synth_smear, write_dataset  # noqa: E402

from hub import tokens  # noqa: E402
from hub.app import create_app  # noqa: E402
from hub.models import Device  # noqa: E402

START = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _record(device: str, seq: int, t: datetime, **kw: Any) -> dict[str, Any]:
    rec = {
        "id": str(uuid.uuid4()),
        "seq": seq,
        "device_id": device,
        "captured_at": _iso(t),
        "monotonic_ns": seq * 1_000_000,
        "boot_id": f"boot-{device}",
        "source": "camera",
        "kind": "classification",
        "review_of": None,
        "models": [{"name": "demo-model", "sha256": "0" * 64}],
        "quality": {"ok": True, "reasons": []},
        "heatmap_sha256": None,
        "filename": None,
        "reviewer": None,
        "comment": None,
        "reason": None,
    }
    rec.update(kw)
    return rec


#: The demo model's confidence is drawn uniformly from this range; below ABSTAIN_BELOW it abstains.
CONFIDENCE_RANGE = (0.45, 0.99)
ABSTAIN_BELOW = 0.6
#: Share of reviewed fields whose first review is a slip, corrected by a later one.
SLIP_RATE = 0.15
#: Reviews come this long after the slide's start (plus a minute per field).
REVIEW_DELAY = timedelta(minutes=30)
#: Every other field carries the station's scale, as a calibrated station records it.
DEMO_UM_PER_PX = 0.25


@dataclass
class _Demo:
    """One populate run: the hub's test client, the seeded draws and each device's sequence."""

    client: Any
    rng: np.random.Generator
    seqs: dict[str, int]
    size: int
    wrong_rate: float
    review_rate: float

    def next_seq(self, device: str) -> int:
        self.seqs[device] += 1
        return self.seqs[device]


def _device_tokens(app: Any, devices: tuple[str, ...]) -> dict[str, str]:
    """A fresh token for each device, registering the ones the hub does not know."""
    with app.extensions["hub"]["sessions"]() as s:
        known = {d.name for d in s.query(Device)}
        return {d: (tokens.rotate(s, Device, d) if d in known else tokens.add_device(s, d)) for d in devices}


def _put_image(d: _Demo, truth: str, auth: dict[str, str]) -> str:
    """A generated field of `truth`'s style, uploaded; its sha256."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(synth_smear(truth, d.rng, d.size), cv2.COLOR_RGB2BGR))
    assert ok
    jpeg = buf.tobytes()
    sha = hashlib.sha256(jpeg).hexdigest()
    r = d.client.put(f"/api/v1/images/{sha}", data=jpeg, headers=auth)
    assert r.status_code in (200, 201), r.get_data(as_text=True)
    return sha


def _model_call(d: _Demo, truth: str) -> tuple[str, float, dict[str, float]]:
    """The demo model's (label, confidence, probabilities): wrong on some fields, unsure on others."""
    wrong = d.rng.random() < d.wrong_rate
    call = str(d.rng.choice([lb for lb in LABELS if lb != truth])) if wrong else truth
    conf = float(d.rng.uniform(*CONFIDENCE_RANGE))
    probs = {lb: round((1 - conf) / (len(LABELS) - 1), 4) for lb in LABELS}
    probs[call] = round(conf, 4)
    return call, conf, probs


def _field_record(
    d: _Demo, device: str, t: datetime, sample_id: str, sha: str, call: tuple[str, float, dict[str, float]]
) -> dict[str, Any]:
    label, conf, probs = call
    return _record(
        device,
        d.next_seq(device),
        t,
        sample_id=sample_id,
        label=label,
        confidence=round(conf, 4),
        abstained=conf < ABSTAIN_BELOW,
        reason="low confidence" if conf < ABSTAIN_BELOW else None,
        probabilities=probs,
        image_sha256=sha,
    )


def _reviews(
    d: _Demo, device: str, rec: dict[str, Any], truth: str, call: str, t_rev: datetime
) -> list[dict]:
    """A technician's reviews of one field: none, the truth, or a slip then the truth."""
    if d.rng.random() >= d.review_rate:
        return []
    labels = [truth]
    if d.rng.random() < SLIP_RATE:  # a slip, corrected by a later review
        labels.insert(0, str(d.rng.choice([lb for lb in LABELS if lb != truth])))
    return [
        _record(
            device,
            d.next_seq(device),
            t_rev + timedelta(seconds=k),
            sample_id=rec["sample_id"],
            source="review",
            kind="review",
            review_of=rec["id"],
            label=lb,
            confidence=1.0,
            abstained=False,
            probabilities=rec["probabilities"],
            image_sha256=rec["image_sha256"],
            reviewer=f"tech-{device[-1]}",
            comment="agree" if lb == call else None,
        )
        for k, lb in enumerate(labels)
    ]


def _finished_sample(sample_id: str, i: int, t0: datetime, device: str) -> dict[str, Any]:
    return {
        "id": sample_id,
        "slide_id": f"DEMO-{i:03d}",
        "status": "finished",
        "started_at": _iso(t0),
        "finished_at": _iso(t0 + timedelta(hours=1)),
        "notes": "",
        "created_by": f"tech-{device[-1]}",
        "summary": None,
    }


def populate(
    url: str,
    *,
    slides: int = 16,
    fields: int = 5,
    devices: tuple[str, ...] = ("scope-a", "scope-b"),
    seed: int = 0,
    size: int = 64,
    wrong_rate: float = 0.25,
    review_rate: float = 0.8,
    start: datetime = START,
) -> dict[str, Any]:
    """Post `slides` samples x `fields` fields (plus reviews) to the hub at `url`; returns what was sent:
    {"records": [...], "reviews": [...], "truth": {record id: label}, "devices": {...}}."""
    app = create_app(url)
    device_tokens = _device_tokens(app, devices)
    d = _Demo(
        app.test_client(),
        np.random.default_rng(seed),
        dict.fromkeys(devices, 0),
        size,
        wrong_rate,
        review_rate,
    )
    sent: dict[str, Any] = {"records": [], "reviews": [], "truth": {}, "devices": list(devices)}
    for i in range(slides):
        device = devices[(i // len(LABELS)) % len(devices)]  # each device sees every label
        auth = {"Authorization": f"Bearer {device_tokens[device]}"}
        truth = LABELS[i % len(LABELS)]
        sample_id = str(uuid.uuid4())
        t0 = start + timedelta(hours=i)
        batch: list[dict[str, Any]] = []
        reviews: list[dict[str, Any]] = []
        for f in range(fields):
            sha = _put_image(d, truth, auth)
            rec = _field_record(d, device, t0 + timedelta(minutes=f), sample_id, sha, _model_call(d, truth))
            if f % 2 == 0:
                rec["um_per_px"] = DEMO_UM_PER_PX
            batch.append(rec)
            sent["truth"][rec["id"]] = truth
            reviews += _reviews(d, device, rec, truth, rec["label"], t0 + REVIEW_DELAY + timedelta(minutes=f))
        records = {"records": batch + reviews, "sent_at": _iso(t0)}
        r = d.client.post("/api/v1/results", json=records, headers=auth)
        assert r.status_code == 200, r.get_data(as_text=True)
        samples = {"samples": [_finished_sample(sample_id, i, t0, device)]}
        d.client.post("/api/v1/samples", json=samples, headers=auth)
        sent["records"] += batch
        sent["reviews"] += reviews
    app.extensions["hub"]["engine"].dispose()
    return sent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", required=True, help="hub database URL (sqlite:///demo-hub.db or postgresql://...)")
    p.add_argument("--slides", type=int, default=16)
    p.add_argument("--fields", type=int, default=5, help="fields of view per slide")
    p.add_argument("--device", action="append", help="device names (default scope-a, scope-b)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--start", default=START.date().isoformat(), help="the first slide's day (device clock)")
    p.add_argument("--original", metavar="DIR", help="also write a generated dataset of class folders here")
    p.add_argument("--original-per-label", type=int, default=24, metavar="N")
    args = p.parse_args(argv)
    if args.original:
        write_dataset(args.original, args.original_per_label, seed=args.seed + 1000, size=args.size)
    sent = populate(
        args.db,
        slides=args.slides,
        fields=args.fields,
        devices=tuple(args.device or ("scope-a", "scope-b")),
        seed=args.seed,
        size=args.size,
        start=datetime.fromisoformat(args.start).replace(hour=8, tzinfo=UTC),
    )
    reviewed = {rv["review_of"] for rv in sent["reviews"]}
    print(
        json.dumps(
            {
                "records": len(sent["records"]),
                "reviews": len(sent["reviews"]),
                "reviewed_records": len(reviewed),
                "devices": sent["devices"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
