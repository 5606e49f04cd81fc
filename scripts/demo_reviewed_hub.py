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
    rng = np.random.default_rng(seed)
    app = create_app(url)
    with app.extensions["hub"]["sessions"]() as s:
        known = {d.name for d in s.query(Device)}
        device_tokens = {
            d: (tokens.rotate(s, Device, d) if d in known else tokens.add_device(s, d)) for d in devices
        }
    client = app.test_client()
    seqs = dict.fromkeys(devices, 0)
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
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(synth_smear(truth, rng, size), cv2.COLOR_RGB2BGR))
            assert ok
            jpeg = buf.tobytes()
            sha = hashlib.sha256(jpeg).hexdigest()
            r = client.put(f"/api/v1/images/{sha}", data=jpeg, headers=auth)
            assert r.status_code in (200, 201), r.get_data(as_text=True)
            wrong = rng.random() < wrong_rate
            call = str(rng.choice([lb for lb in LABELS if lb != truth])) if wrong else truth
            conf = float(rng.uniform(0.45, 0.99))
            probs = {lb: round((1 - conf) / (len(LABELS) - 1), 4) for lb in LABELS}
            probs[call] = round(conf, 4)
            seqs[device] += 1
            extra = {"um_per_px": 0.25} if f % 2 == 0 else {}
            rec = _record(
                device,
                seqs[device],
                t0 + timedelta(minutes=f),
                sample_id=sample_id,
                label=call,
                confidence=round(conf, 4),
                abstained=conf < 0.6,
                reason="low confidence" if conf < 0.6 else None,
                probabilities=probs,
                image_sha256=sha,
                **extra,
            )
            batch.append(rec)
            sent["truth"][rec["id"]] = truth
            if rng.random() < review_rate:
                t_rev = t0 + timedelta(minutes=30 + f)
                labels = [truth]
                if rng.random() < 0.15:  # a slip, corrected by a later review
                    labels.insert(0, str(rng.choice([lb for lb in LABELS if lb != truth])))
                for k, lb in enumerate(labels):
                    seqs[device] += 1
                    rv = _record(
                        device,
                        seqs[device],
                        t_rev + timedelta(seconds=k),
                        sample_id=sample_id,
                        source="review",
                        kind="review",
                        review_of=rec["id"],
                        label=lb,
                        confidence=1.0,
                        abstained=False,
                        probabilities=probs,
                        image_sha256=sha,
                        reviewer=f"tech-{device[-1]}",
                        comment="agree" if lb == call else None,
                    )
                    reviews.append(rv)
        r = client.post(
            "/api/v1/results", json={"records": batch + reviews, "sent_at": _iso(t0)}, headers=auth
        )
        assert r.status_code == 200, r.get_data(as_text=True)
        sample = {
            "id": sample_id,
            "slide_id": f"DEMO-{i:03d}",
            "status": "finished",
            "started_at": _iso(t0),
            "finished_at": _iso(t0 + timedelta(hours=1)),
            "notes": "",
            "created_by": f"tech-{device[-1]}",
            "summary": None,
        }
        client.post("/api/v1/samples", json={"samples": [sample]}, headers=auth)
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
