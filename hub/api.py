"""The hub's JSON API (`/api/v1`). Devices push images and result batches; users read.

Answers per record in `POST /api/v1/results`:
- `accepted`  — stored now;
- `duplicate` — this UUID is already stored (a resend after a lost answer, or after a technician reviewed
  one of its cells on the station: newer cell reviews are copied onto the stored cells, counted in
  `cells_reviewed`; hub/cells/store.py);
- `deferred`  — it names an image this device has not uploaded yet, or reviews a record not on the hub yet:
  not stored; upload the image (send the record) and resend;
- `rejected`  — malformed (the `reason` names the field), or it touches another device's data (its UUID,
  its `sample_id` or the record its `review_of` names belongs to another device): the device quarantines it.
A device sees only its own images: `HEAD /images/<sha>`, `/images/have` and the images its records may name
are the ones it uploaded itself, so it learns nothing about what other devices sent.
The HTTP status is 200 when the envelope is valid and at least one record was accepted, duplicate or
deferred (or the batch was empty); 422 when the envelope is malformed or every record was rejected —
the body still carries the per-record answers.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, g, jsonify, request
from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from hub.api_common import check_sha, json_body, request_body, requires
from hub.cells.store import CellRow, cell_json, cells_of, store_cells, validate_cells
from hub.extensions import hub_ext, session
from hub.metrics import hub_metrics
from hub.models import Cell, Device, Image, ImageDevice, Result, Sample
from hub.records import SHA256, RecordError, parse_time, time_flag, validate, validate_sample

api = Blueprint("api", __name__, url_prefix="/api/v1")

JPEG_MAGIC = b"\xff\xd8"  # every JPEG starts with SOI; refusing other bytes keeps HTML etc. out


def _insert(model: type) -> Any:
    """INSERT … ON CONFLICT DO NOTHING for the session's dialect (idempotent under concurrency)."""
    name = session().get_bind().dialect.name
    if name == "postgresql":
        return pg_insert(model)
    if name == "sqlite":
        return sqlite_insert(model)
    return insert(model)  # pragma: no cover


# --- device endpoints -----------------------------------------------------------------------------


@api.get("/ping")
@requires("device", "user")
def ping() -> Response:
    who = f"device:{g.device.name}" if g.device is not None else f"user:{g.user.name}"
    return jsonify({"ok": True, "time": _iso(datetime.now(UTC)), "principal": who})


@api.route("/images/<sha>", methods=["GET", "HEAD"])
@requires("device", "user")
def get_image(sha: str) -> Response:
    check_sha(sha)
    if request.method == "HEAD":
        q = select(Image.size).where(Image.sha256 == sha)
        if g.device is not None:  # a device sees only what it uploaded itself
            q = q.join(ImageDevice, ImageDevice.sha256 == Image.sha256).where(
                ImageDevice.device_id == g.device.id
            )
        size = session().scalar(q)
        if size is None:
            abort(404, "no such image")
        return Response(status=200, headers={"Content-Length": str(size), "Content-Type": "image/jpeg"})
    if g.user is None:
        abort(403, "devices may not read images")
    data = session().scalar(select(Image.data).where(Image.sha256 == sha))
    if data is None:
        abort(404, "no such image")
    return Response(bytes(data), mimetype="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


@api.put("/images/<sha>")
@requires("device")
def put_image(sha: str) -> tuple[Response, int]:
    check_sha(sha)
    data = request_body()
    if not data:
        abort(422, "empty body")
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha:
        abort(422, f"body sha256 is {actual}, not {sha} (corrupted in transit?)")
    if not data.startswith(JPEG_MAGIC):
        abort(422, "not a JPEG (the body must start with the JPEG SOI marker FF D8)")
    s = session()
    now = datetime.now(UTC)
    s.execute(
        _insert(Image)
        .values(sha256=sha, size=len(data), data=data, device_id=g.device.id, received_at=now)
        .on_conflict_do_nothing(index_elements=["sha256"])
    )
    # The answer speaks only of this device's own uploads: "exists" must not reveal that another
    # device sent the same bytes. Sending the bytes proves the device has them, so it becomes an owner.
    stmt = (
        _insert(ImageDevice)
        .values(sha256=sha, device_id=g.device.id, received_at=now)
        .on_conflict_do_nothing(index_elements=["sha256", "device_id"])
        .returning(ImageDevice.sha256)
    )
    created = s.execute(stmt).first() is not None
    s.commit()
    return jsonify({"sha256": sha, "status": "stored" if created else "exists"}), 201 if created else 200


@api.post("/images/have")
@requires("device")
def have_images() -> Response:
    body = json_body()
    shas = body.get("sha256") if isinstance(body, dict) else None
    if not isinstance(shas, list) or not all(isinstance(x, str) and SHA256.match(x) for x in shas):
        abort(422, 'body must be {"sha256": [64-hex, ...]}')
    if len(shas) > 10_000:
        abort(422, "at most 10000 hashes per query")
    have = _have(set(shas), g.device.id)
    return jsonify({"have": sorted(have), "missing": sorted(set(shas) - have)})


def _have(shas: set[str], device_id: int) -> set[str]:
    """The hashes among `shas` that this device uploaded (other devices' images do not count)."""
    out: set[str] = set()
    items = sorted(shas)
    for i in range(0, len(items), 500):
        chunk = items[i : i + 500]
        q = select(ImageDevice.sha256).where(
            ImageDevice.device_id == device_id, ImageDevice.sha256.in_(chunk)
        )
        out.update(session().scalars(q))
    return out


def _foreign(column: Any, owner: Any, ids: set[str], device_id: int) -> set[str]:
    """The ids among `ids` (values of `column`) that have a row owned by another device."""
    out: set[str] = set()
    items = sorted(ids)
    for i in range(0, len(items), 500):
        chunk = items[i : i + 500]
        q = select(column).where(column.in_(chunk), owner != device_id).distinct()
        out.update(session().scalars(q))
    return out


@dataclass
class _Batch:
    """A device's batch of records as checked record by record: what is answered already, what may be
    stored (id -> (position, columns, record as sent)) and each valid record's cells."""

    records: list[Any]
    now: datetime
    skew: float | None  # device clock minus hub clock (s), when the device said when it sent
    answers: dict[int, dict[str, Any]] = field(default_factory=dict)
    valid: dict[str, tuple[int, dict[str, Any], Any]] = field(default_factory=dict)
    cells: dict[str, list[CellRow]] = field(default_factory=dict)


@dataclass
class _Stored:
    """What the insert did: the ids it inserted, the owners of the ids that were there already, and how
    many cell reviews each record brought."""

    inserted: set[str]
    owners: dict[str, int]
    reviewed: dict[str, int]


@api.post("/results")
@requires("device")
def post_results() -> tuple[Response, int]:
    settings = hub_ext()["settings"]
    batch = _read_batch(settings.max_batch)
    _check_records(batch)
    rows = _rows_to_store(batch, g.device.id, settings.skew_limit_s)
    stored = _store_rows(rows, batch, g.device.id)
    for r in rows:
        i = batch.valid[r["id"]][0]
        if r["id"] in stored.inserted:
            batch.answers[i] = {"id": r["id"], "status": "accepted"}
        elif stored.owners.get(r["id"], g.device.id) != g.device.id:
            batch.answers[i] = {
                "id": r["id"],
                "status": "rejected",
                "reason": "id: already used by another device",
            }
        else:
            batch.answers[i] = {"id": r["id"], "status": "duplicate"}
            if stored.reviewed.get(r["id"]):
                batch.answers[i]["cells_reviewed"] = stored.reviewed[r["id"]]
    records, skew = batch.records, batch.skew
    out = [batch.answers[i] for i in range(len(records))]
    counts = {
        k: sum(1 for a in out if a["status"] == k) for k in ("accepted", "duplicate", "deferred", "rejected")
    }
    hub_metrics().count_records(counts)
    ok = not records or counts["rejected"] < len(records)
    resp = {"results": out, "counts": counts, "received_at": _iso(batch.now), "clock_skew_s": skew}
    if not ok:
        resp["error"] = "every record was rejected"
        resp["reason"] = out[0].get("reason")
    return jsonify(resp), 200 if ok else 422


def _read_batch(max_batch: int) -> _Batch:
    """The request's records and the device clock's skew; a malformed body aborts (422, 413)."""
    body = json_body()
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        abort(422, 'body must be {"records": [record, ...], "sent_at": "<device time>"}')
    records: list[Any] = body["records"]
    if len(records) > max_batch:
        abort(413, f"at most {max_batch} records per batch")
    now = datetime.now(UTC)
    skew = None
    if body.get("sent_at") is not None:
        try:
            skew = (parse_time(body["sent_at"], "sent_at") - now).total_seconds()
        except RecordError as exc:
            abort(422, str(exc))
    return _Batch(records, now, skew)


def _check_records(batch: _Batch) -> None:
    """Each record validated on its own: an invalid one rejected, an id repeated in the batch a duplicate."""
    for i, rec in enumerate(batch.records):
        rid = rec.get("id") if isinstance(rec, dict) else None
        try:
            cols = validate(rec)
            record_cells = validate_cells(rec.get("cells"), cols["kind"])
        except RecordError as exc:
            batch.answers[i] = {"id": rid, "status": "rejected", "reason": str(exc)}
            continue
        if cols["id"] in batch.valid:
            batch.answers[i] = {"id": rid, "status": "duplicate"}
            continue
        batch.valid[cols["id"]] = (i, cols, rec)
        batch.cells[cols["id"]] = record_cells


def _rows_to_store(batch: _Batch, me: int, skew_limit_s: float) -> list[dict[str, Any]]:
    """The valid records this device may store now, as table rows; the others answered (rejected: another
    device's sample or record; deferred: an image or reviewed record not on the hub yet)."""
    valid, answers, now, skew = batch.valid, batch.answers, batch.now, batch.skew
    needed = {c[k] for _, c, _ in valid.values() for k in ("image_sha256", "heatmap_sha256") if c[k]}
    missing = needed - _have(needed, me)
    # Ownership: a record may name only this device's samples (or a new one) and review only this
    # device's records. A sample belongs to the device that first described it or sent records for it.
    sample_ids = {c["sample_id"] for _, c, _ in valid.values() if c["sample_id"]}
    foreign_samples = _foreign(Sample.id, Sample.device_id, sample_ids, me) | _foreign(
        Result.sample_id, Result.device_id, sample_ids, me
    )
    targets = {c["review_of"] for _, c, _ in valid.values() if c["review_of"]}
    foreign_targets = _foreign(Result.id, Result.device_id, targets, me)
    own_targets = set(session().scalars(select(Result.id).where(Result.id.in_(targets - foreign_targets))))
    rows = []
    for rid, (i, cols, rec) in valid.items():
        if cols["sample_id"] in foreign_samples:
            answers[i] = {"id": rid, "status": "rejected", "reason": "sample_id: a sample of another device"}
            continue
        if cols["review_of"] in foreign_targets:
            answers[i] = {"id": rid, "status": "rejected", "reason": "review_of: a record of another device"}
            continue
        lacking = [c for c in (cols["image_sha256"], cols["heatmap_sha256"]) if c and c in missing]
        if lacking:
            answers[i] = {"id": rid, "status": "deferred", "reason": f"image {lacking[0]} not on the hub yet"}
            continue
        target = cols["review_of"]
        if target and target not in own_targets and target not in valid:
            reason = f"review_of: record {target} is not on the hub yet (send it first)"
            answers[i] = {"id": rid, "status": "deferred", "reason": reason}
            continue
        # Devices often lack a real-time clock: a device clock off by more than the limit (sent_at vs
        # hub time), a capture time in the hub's future or before the software existed is stored but
        # flagged with the reason. received_at is always the hub's clock.
        flag = time_flag(parse_time(cols["captured_at"], "captured_at"), now, skew, skew_limit_s)
        del cols["heatmap_sha256"]
        rows.append(
            {
                **cols,
                "device_id": me,
                "received_at": now,
                "clock_skew_s": skew,
                "skew_flag": flag is not None,
                "time_flag": flag,
                # the cells live in their own table (their reviews change); the rest as sent
                "record_json": json.dumps(
                    {k: v for k, v in rec.items() if k != "cells"}, separators=(",", ":"), sort_keys=True
                ),
            }
        )
    return rows


def _store_rows(rows: list[dict[str, Any]], batch: _Batch, me: int) -> _Stored:
    """Insert the rows (an id already there is left alone), their cells, and the device's clock skew; one
    commit."""
    s = session()
    inserted: set[str] = set()
    if rows:
        stmt = _insert(Result).on_conflict_do_nothing(index_elements=["id"]).returning(Result.id)
        inserted = set(s.scalars(stmt, rows))
    dup_ids = [r["id"] for r in rows if r["id"] not in inserted]
    owners = {}
    if dup_ids:
        owners = dict(s.execute(select(Result.id, Result.device_id).where(Result.id.in_(dup_ids))).all())
    reviewed: dict[str, int] = {}
    for r in rows:  # a record's cells once; a resend of this device's own record brings newer reviews
        if r["id"] in inserted or owners.get(r["id"]) == me:
            reviewed[r["id"]] = store_cells(s, r["id"], batch.cells[r["id"]], _insert(Cell))
    if batch.skew is not None:
        s.execute(update(Device).where(Device.id == me).values(clock_skew_s=batch.skew))
    s.commit()
    return _Stored(inserted, owners, reviewed)


@api.post("/samples")
@requires("device")
def post_samples() -> tuple[Response, int]:
    """Upsert samples (slide id, status, the device's summary). Per sample: `stored` or `rejected` +
    reason. A finished sample never goes back to open; another device's sample id is rejected."""
    body = json_body()
    if not isinstance(body, dict) or not isinstance(body.get("samples"), list):
        abort(422, 'body must be {"samples": [sample, ...]}')
    if len(body["samples"]) > hub_ext()["settings"].max_batch:
        abort(413, f"at most {hub_ext()['settings'].max_batch} samples per request")
    s = session()
    now = datetime.now(UTC)
    out = []
    for item in body["samples"]:
        sid = item.get("id") if isinstance(item, dict) else None
        try:
            cols = validate_sample(item)
        except RecordError as exc:
            out.append({"id": sid, "status": "rejected", "reason": str(exc)})
            continue
        if _foreign(Result.sample_id, Result.device_id, {cols["id"]}, g.device.id):
            reason = "id: already used by another device"  # another device's records name this sample
            out.append({"id": cols["id"], "status": "rejected", "reason": reason})
            continue
        s.execute(
            _insert(Sample)
            .values(**cols, device_id=g.device.id, received_at=now)
            .on_conflict_do_nothing(index_elements=["id"])
        )
        keep_finished = (Sample.status != "finished") | (cols["status"] == "finished")
        changed = s.execute(
            update(Sample)
            .where(Sample.id == cols["id"], Sample.device_id == g.device.id, keep_finished)
            .values(**{k: v for k, v in cols.items() if k != "id"}, received_at=now)
        ).rowcount
        owner = s.scalar(select(Sample.device_id).where(Sample.id == cols["id"]))
        if owner != g.device.id:
            out.append(
                {"id": cols["id"], "status": "rejected", "reason": "id: already used by another device"}
            )
        else:
            out.append({"id": cols["id"], "status": "stored" if changed else "unchanged"})
    s.commit()
    ok = not out or any(a["status"] != "rejected" for a in out)
    return jsonify({"results": out}), 200 if ok else 422


# --- read endpoints (a user's token) --------------------------------------------------------------


@api.get("/stats")
@requires("user")
def stats() -> Response:
    s = session()
    return jsonify(
        {
            "results": s.scalar(select(func.count()).select_from(Result)),
            "images": s.scalar(select(func.count()).select_from(Image)),
            "devices": s.scalar(select(func.count()).select_from(Device)),
        }
    )


@api.get("/devices")
@requires("user")
def devices() -> Response:
    s = session()
    counts = dict(s.execute(select(Result.device_id, func.count()).group_by(Result.device_id)).all())
    out = [
        {
            "name": d.name,
            "created_at": _iso(d.created_at),
            "last_seen_at": _iso(d.last_seen_at),
            "clock_skew_s": d.clock_skew_s,
            "results": counts.get(d.id, 0),
            "disabled": d.disabled,
        }
        for d in s.scalars(select(Device).order_by(Device.name))
    ]
    return jsonify({"devices": out})


@api.get("/results")
@requires("user")
def list_results() -> Response:
    """Records newest first; filters device, sample, label, abstained=1; `limit` ≤ 1000, `offset`."""
    s = session()
    if any("\x00" in v for v in request.args.values()):
        abort(400, "query parameters must not contain NUL characters")
    q = select(Result, Device.name).join(Device, Device.id == Result.device_id)
    if request.args.get("device"):
        q = q.where(Device.name == request.args["device"])
    if request.args.get("sample"):
        q = q.where(Result.sample_id == request.args["sample"])
    if request.args.get("label"):
        q = q.where(Result.label == request.args["label"])
    if request.args.get("abstained") in ("1", "true"):
        q = q.where(Result.abstained.is_(True))
    limit = min(max(request.args.get("limit", 100, type=int), 1), 1000)
    offset = min(max(request.args.get("offset", 0, type=int), 0), 2**31 - 1)  # a huge one was a 500
    rows = s.execute(q.order_by(Result.received_at.desc(), Result.id).limit(limit).offset(offset)).all()
    by_record = cells_of(s, (r.id for r, _ in rows))
    out = [result_json(r, name, by_record.get(r.id, [])) for r, name in rows]
    return jsonify({"results": out, "limit": limit, "offset": offset})


@api.get("/results/<rid>")
@requires("user")
def get_result(rid: str) -> Response:
    try:
        rid = str(uuid.UUID(rid))
    except ValueError:
        abort(404, "no such result")
    row = (
        session()
        .execute(
            select(Result, Device.name).join(Device, Device.id == Result.device_id).where(Result.id == rid)
        )
        .first()
    )
    if row is None:
        abort(404, "no such result")
    return jsonify(result_json(*row, cells_of(session(), [rid]).get(rid, [])))


def result_json(r: Result, device_name: str, cells: list[Cell]) -> dict[str, Any]:
    """The record as the device sent it with its cells as the hub holds them (the station's latest
    cell reviews), plus what the hub knows about its arrival."""
    rec = json.loads(r.record_json)
    rec["cells"] = [cell_json(c) for c in cells]
    rec["hub"] = {
        "device": device_name,
        "received_at": _iso(r.received_at),
        "clock_skew_s": r.clock_skew_s,
        "skew_flag": r.skew_flag,
        "time_flag": r.time_flag,
    }
    return rec


def _iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
