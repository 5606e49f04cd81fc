"""Server-rendered dashboard: devices and last contact, samples with slide-level calls, uncertain
results awaiting review, CSV export. People log in with their user token (`smearscope-hub users add`)."""

from __future__ import annotations

import io
import json
import secrets
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask import (
    session as cookie,
)
from sqlalchemy import Select, and_, delete, func, or_, select
from sqlalchemy.orm import aliased

from common import csvsafe
from common.record_fields import RESULTS_CSV_COLUMNS as CSV_COLUMNS
from common.wording import DISCLAIMER
from hub import tokens
from hub.cells.store import AWAITING_REVIEW_RULE, cells_to_review
from hub.extensions import session
from hub.login import login_required, sid_hash
from hub.models import Device, Image, Result, Sample, UserSession
from hub.records import SHA256

dashboard = Blueprint(
    "dashboard", __name__, template_folder="templates", static_folder="static", static_url_path="/static"
)

SAMPLES_SHOWN = 100
REVIEW_SHOWN = 200
#: Rows the CSV export fetches from the database at a time (memory stays bounded on a large hub).
CSV_FETCH_ROWS = 1000
CALL_RULE = (
    "the label with the most confident (not abstained) fields of the sample, counting a technician's "
    "review instead of the record it reviews; no confident field means 'uncertain: review'. Fields "
    "counted cell by cell are not voted on: their slide is called by the station's count of its cells."
)
#: The hub's count for a slide counted cell by cell: no majority of field calls (a few suspicious fields
#: among many clear ones must not read as a clear slide); the cell count and the station's call stand.
CELLS_CALL = "counted by cells: see the cell count and the device's call"


@dashboard.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        user = tokens.find_user(session(), request.form.get("token", "").strip())
        if user is not None:
            sid = secrets.token_urlsafe(32)
            s = session()
            s.add(UserSession(id_hash=sid_hash(sid), user_id=user.id, created_at=datetime.now(UTC)))
            s.commit()
            cookie.clear()
            cookie["sid"] = sid
            nxt = request.args.get("next", "")
            return redirect(nxt if _local_path(nxt) else url_for("dashboard.index"))
        error = "That token is not a registered user's token."
    return render_template("login.html", error=error), 401 if error else 200


def _local_path(target: str) -> bool:
    """A path on this hub, never another site: browsers read `/\\evil` and `/<tab>/evil` as `//evil`."""
    return (
        target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and all(c.isprintable() and not c.isspace() for c in target)
    )


@dashboard.post("/logout")
def logout() -> Any:
    sid = cookie.get("sid")
    if isinstance(sid, str):
        s = session()
        s.execute(delete(UserSession).where(UserSession.id_hash == sid_hash(sid)))
        s.commit()
    cookie.clear()
    return redirect(url_for("dashboard.login"))


@dashboard.get("/")
@login_required
def index() -> str:
    s = session()
    counts = dict(s.execute(select(Result.device_id, func.count()).group_by(Result.device_id)).all())
    skewed = dict(
        s.execute(
            select(Result.device_id, func.count())
            .where(Result.skew_flag.is_(True))
            .group_by(Result.device_id)
        ).all()
    )
    devices = [
        {"d": d, "results": counts.get(d.id, 0), "skewed": skewed.get(d.id, 0), "ago": _ago(d.last_seen_at)}
        for d in s.scalars(select(Device).order_by(Device.name))
    ]
    stats = {
        "results": s.scalar(select(func.count()).select_from(Result)),
        "images": s.scalar(select(func.count()).select_from(Image)),
        "devices": len(devices),
    }
    return render_template("index.html", devices=devices, stats=stats)


@dashboard.get("/samples")
@login_required
def samples() -> str:
    s = session()
    recent = s.execute(
        select(Result.sample_id, func.max(Result.captured_at).label("last"))
        .where(Result.sample_id.is_not(None))
        .group_by(Result.sample_id)
        .order_by(func.max(Result.captured_at).desc())
        .limit(SAMPLES_SHOWN)
    ).all()
    ids = [r.sample_id for r in recent]
    rows = s.execute(
        select(Result, Device.name)
        .join(Device, Device.id == Result.device_id)
        .where(Result.sample_id.in_(ids))
    ).all()
    by_sample: dict[str, list[tuple[Result, str]]] = defaultdict(list)
    for r, name in rows:
        by_sample[r.sample_id].append((r, name))
    meta = {m.id: m for m in s.scalars(select(Sample).where(Sample.id.in_(ids)))}
    for sid, group in by_sample.items():  # only the owner's records count towards a slide
        first = min(group, key=lambda x: (x[0].received_at, x[0].seq))[0]
        owner = meta[sid].device_id if sid in meta else first.device_id
        by_sample[sid] = [(r, name) for r, name in group if r.device_id == owner]
    out = [slide_summary(sid, by_sample[sid], meta.get(sid)) for sid in ids]
    return render_template("samples.html", samples=out, rule=CALL_RULE)


def slide_summary(
    sample_id: str, rows: list[tuple[Result, str]], meta: Sample | None = None
) -> dict[str, Any]:
    """The hub's count over the records it has, plus what the device said about the slide: its slide
    id, open/finished and (once finished) the device's own slide call with the rule behind it."""
    by_id = {r.id: r for r, _ in rows}
    # A review counts only for a record of its own device (the API refuses others; this keeps rows
    # stored before that check from counting).
    reviews = {
        r.review_of: r
        for r, _ in rows
        if r.kind == "review" and r.review_of in by_id and by_id[r.review_of].device_id == r.device_id
    }
    labels: Counter[str] = Counter()
    uncertain = fields = cell_fields = 0
    for r, _ in rows:
        if r.kind == "review":
            continue
        if r.kind == "cells":  # a field counted cell by cell: its label is a field call, not a class
            cell_fields += 1
            continue
        fields += 1
        rv = reviews.get(r.id)
        if rv is not None:
            labels[rv.label] += 1
        elif r.abstained:
            uncertain += 1
        else:
            labels[r.label] += 1
    call = labels.most_common(1)[0][0] if labels else "uncertain: review"
    if cell_fields and not fields:
        call = CELLS_CALL
    return {
        "id": sample_id,
        "device": rows[0][1] if rows else "",
        "fields": fields,
        "cell_fields": cell_fields,
        "uncertain": uncertain,
        "reviewed": len(reviews),
        "labels": dict(labels.most_common()),
        "call": call,
        "first": min((r.captured_at for r, _ in rows), default=""),
        "last": max((r.captured_at for r, _ in rows), default=""),
        "slide_id": meta.slide_id if meta else None,
        "status": meta.status if meta else None,
        "device_call": (json.loads(meta.summary_json) if meta and meta.summary_json else None),
    }


@dashboard.get("/review")
@login_required
def review() -> str:
    s = session()
    rv = aliased(Result)
    # reviewed = a review by the same device exists (another device's "review" does not count)
    reviewed = select(rv.id).where(rv.review_of == Result.id, rv.device_id == Result.device_id).exists()
    to_review = cells_to_review(Result.id)  # cells records: hub/cells/store.py AWAITING_REVIEW_RULE
    rows = s.execute(
        select(Result, Device.name, to_review)
        .join(Device, Device.id == Result.device_id)
        .where(
            or_(
                and_(Result.abstained.is_(True), Result.kind == "classification", ~reviewed),
                and_(Result.kind == "cells", to_review > 0),
            )
        )
        .order_by(Result.captured_at.desc())
        .limit(REVIEW_SHOWN)
    ).all()
    items = [
        {"r": r, "device": name, "rec": json.loads(r.record_json), "cells_to_review": n}
        for r, name, n in rows
    ]
    return render_template("review.html", items=items, cells_rule=AWAITING_REVIEW_RULE)


@dashboard.get("/images/<sha>.jpg")
@login_required
def image(sha: str) -> Response:
    if not SHA256.match(sha):  # NUL and the like reached PostgreSQL as a 500
        abort(404)
    data = session().scalar(select(Image.data).where(Image.sha256 == sha))
    if data is None:
        abort(404)
    return Response(bytes(data), mimetype="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


@dashboard.get("/export/results.csv")
@login_required
def export_csv() -> Response:
    sessions = session

    def rows() -> Iterator[str]:
        buf = io.StringIO()
        w = csvsafe.writer(buf)
        w.writerow(CSV_COLUMNS)
        s = sessions()
        for r, name, reviewed_label in s.execute(
            _results_query().execution_options(yield_per=CSV_FETCH_ROWS)
        ):
            w.writerow(_csv_row(r, name, reviewed_label))
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Response(
        stream_with_context(rows()),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="smearscope-results-{stamp}.csv"'},
    )


def _results_query() -> Select:
    """Every record with its device's name and the label of its newest review by the same device."""
    review = aliased(Result)
    latest_review = (
        select(review.label)
        .where(review.review_of == Result.id, review.device_id == Result.device_id)
        .order_by(review.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    return (
        select(Result, Device.name, latest_review)
        .join(Device, Device.id == Result.device_id)
        .order_by(Device.name, Result.seq)
    )


def _csv_row(r: Result, name: str, reviewed_label: str | None) -> list[Any]:
    """One record as a row of CSV_COLUMNS."""
    rec = json.loads(r.record_json)
    return [
        r.id,
        name,
        r.seq,
        r.sample_id or "",
        r.captured_at,
        r.received_at.isoformat(),
        "" if r.clock_skew_s is None else f"{r.clock_skew_s:.1f}",
        int(r.skew_flag),
        r.source,
        r.kind,
        r.review_of or "",
        r.label,
        f"{r.confidence:.4f}",
        int(r.abstained),
        rec.get("reason") or "",
        r.image_sha256 or "",
        json.dumps(rec.get("probabilities", {}), sort_keys=True),
        r.time_flag or "",
        "" if r.um_per_px is None else f"{r.um_per_px:.6g}",
        r.profile or "",
        rec.get("reviewer") or "",
        rec.get("comment") or "",
        (r.label if r.kind == "review" else reviewed_label) or "",
        DISCLAIMER,
    ]


@dashboard.app_template_filter("offset")
def offset(seconds: float | None) -> str:
    """A clock offset for people: "+3 s", "-2.1 d"."""
    if seconds is None:
        return "unknown"
    a = abs(seconds)
    sign = "-" if seconds < 0 else "+"
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if a >= n:
            return f"{sign}{a / n:.1f} {unit}"
    return f"{sign}{a:.0f} s"


def _ago(t: datetime | None) -> str:
    if t is None:
        return "never"
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    s = int((datetime.now(UTC) - t).total_seconds())
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= n:
            return f"{s // n} {unit} ago"
    return f"{max(s, 0)} s ago"
