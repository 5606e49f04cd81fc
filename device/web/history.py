"""History: the paginated, filtered list of records; a record's detail page and review; images,
thumbnails and exports."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    send_file,
    stream_with_context,
    url_for,
)
from flask_babel import gettext

from device.store.store import StoreError
from device.web import queries
from device.web.export import csv_cell_rows, csv_group_rows, json_stream
from device.web.live import labels_info
from device.web.thumbs import SHA_RE, thumbnail

bp = Blueprint("history", __name__)

PAGE = 50
IMMUTABLE = "private, max-age=31536000, immutable"  # images are named by their hash


def _ext():
    return current_app.extensions["smearscope"]


def label_ids() -> list[str]:
    labels = [lb["id"] for lb in labels_info(_ext().services)]
    if labels:
        return labels
    row = _ext().conn().execute("SELECT probabilities_json FROM results ORDER BY seq DESC LIMIT 1").fetchone()
    if row:
        import json

        return list(json.loads(row[0] or "{}"))
    return []


@bp.route("/history")
def page():
    ext = _ext()
    try:
        filters = queries.parse_filters(request.args, conn=ext.conn(), default_limit=PAGE, max_limit=200)
    except queries.BadFilter as exc:
        abort(400, description=str(exc))
    rows, cursor = queries.list_results(ext.conn(), filters, with_cells=False)
    reviews = queries.reviews_for(ext.conn(), [r["id"] for r in rows])
    slides = queries.sample_slides(ext.conn(), [r["sample_id"] for r in rows])
    next_args = {**filters.query_args(), "before": cursor} if cursor else None
    return render_template(
        "history.html",
        rows=rows,
        reviews=reviews,
        slides=slides,
        filters=filters,
        args=filters.query_args(),
        next_args=next_args,
        labels=label_ids(),
    )


@bp.route("/results/<result_id>")
def detail(result_id: str):
    ext = _ext()
    rec = ext.store.get_result(result_id)
    if rec is None:
        abort(404, description=gettext("no record %(id)s", id=result_id))
    reviews = ext.store.reviews_of(rec["id"]) if rec["kind"] == "classification" else []
    original = ext.store.get_result(rec["review_of"]) if rec["review_of"] else None
    sample = ext.store.get_sample(rec["sample_id"]) if rec["sample_id"] else None
    return render_template(
        "result.html",
        rec=rec,
        reviews=reviews,
        original=original,
        sample=sample,
        labels=list(rec["probabilities"]) or label_ids(),
        malignant=[lb["id"] for lb in labels_info(ext.services) if lb.get("malignant")],
    )


@bp.route("/results/<result_id>/review", methods=["POST"])
def review(result_id: str):
    ext = _ext()
    verdict = request.form.get("verdict", "agree")
    label = None if verdict == "agree" else request.form.get("label") or None
    if verdict != "agree" and not label:
        abort(400, description=gettext("choose the correct label, or agree"))
    comment = (request.form.get("comment") or "").strip()[:2000]
    try:
        new = ext.store.add_review(result_id, label, comment, g.user.name)
    except StoreError as exc:
        abort(404 if "no result" in str(exc) else 400, description=str(exc))
    flash(gettext("Review saved as a new record; the original is kept unchanged."))
    return redirect(url_for("history.detail", result_id=new["review_of"]))


@bp.route("/image/<sha>.jpg")
def image(sha: str):
    if not SHA_RE.match(sha):
        abort(404)
    path = _ext().store.image_path(sha)
    if not path.is_file():
        abort(
            404, description="image not on this device (removed by retention after syncing, or never stored)"
        )
    resp = send_file(path, mimetype="image/jpeg", max_age=31536000)
    resp.headers["Cache-Control"] = IMMUTABLE
    return resp


@bp.route("/image/<sha>/thumb.jpg")
def thumb(sha: str):
    ext = _ext()
    if not SHA_RE.match(sha):
        abort(404)
    path = thumbnail(ext.store.image_path(sha), ext.data_dir / "thumbs", sha)
    if path is None:
        abort(404)
    resp = send_file(path, mimetype="image/jpeg", max_age=31536000)
    resp.headers["Cache-Control"] = IMMUTABLE
    return resp


def export_response(filters: queries.Filters, fmt: str) -> Response:
    ext = _ext()
    store = ext.store
    labels = label_ids()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    stem = f"smearscope-{filters.sample[:8] if filters.sample else 'records'}-{stamp}"
    sample = store.get_sample(filters.sample) if filters.sample else None
    if filters.sample and sample is None:
        abort(404, description=gettext("no sample %(id)s", id=filters.sample))
    if fmt == "csv":
        slides = {sample["id"]: sample["slide_id"]} if sample else _SlideLookup(ext.conn())
        body = csv_group_rows(queries.iter_record_groups(ext.conn(), filters), labels, slides)
        mimetype = "text/csv"
    elif fmt == "cells.csv":
        slides = {sample["id"]: sample["slide_id"]} if sample else _SlideLookup(ext.conn())
        body = csv_cell_rows((rec for rec, _ in queries.iter_record_groups(ext.conn(), filters)), slides)
        mimetype = "text/csv"
        stem += "-cells"
        fmt = "csv"
    elif fmt == "json":
        meta = {"filters": filters.query_args(), "labels": labels, "sample": sample, "exported_at": stamp}
        body = json_stream(queries.iter_records(ext.conn(), filters), meta)
        mimetype = "application/json"
    else:
        abort(400, description=f"format: expected csv, cells.csv or json, not {fmt!r}")
    return Response(
        stream_with_context(body),
        mimetype=mimetype,
        headers={"Content-Disposition": f'attachment; filename="{stem}.{fmt}"', "Cache-Control": "no-store"},
    )


class _SlideLookup(dict):
    """sample id → slide id, looked up lazily and remembered (exports over many samples)."""

    def __init__(self, conn):
        super().__init__()
        self.conn = conn

    def get(self, key, default=None):
        if not key:
            return default
        if key not in self:
            self[key] = queries.sample_slides(self.conn, [key]).get(key, default)
        return self[key]


@bp.route("/export.<fmt>")
def export(fmt: str):
    try:
        filters = queries.parse_filters(request.args, conn=_ext().conn())
    except queries.BadFilter as exc:
        abort(400, description=str(exc))
    return export_response(filters, fmt)
