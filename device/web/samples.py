"""Samples (slides): start one with its slide id and notes, follow its summary, finish it; for a slide
counted cell by cell, the cell gallery (thumbnails cut from the stored frames) and reclassifying a cell
(JSON, so the counts, blast % and call update in place)."""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from flask_babel import gettext

from device.slides.thumbs import cell_thumbnail
from device.store.store import StoreError
from device.web import queries
from device.web.cell_gallery import build_gallery, choices
from device.web.cell_words import call_text, verified_text

bp = Blueprint("samples", __name__)


def _store():
    return current_app.extensions["smearscope"].store


@bp.route("/samples")
def index():
    store = _store()
    before = request.args.get("before") or None
    rows = store.list_samples(before=before, limit=50)
    next_before = rows[-1]["started_at"] if len(rows) == 50 else None
    return render_template("samples.html", rows=rows, next_before=next_before)


@bp.route("/samples", methods=["POST"])
def start():
    slide_id = (request.form.get("slide_id") or "").strip()
    notes = (request.form.get("notes") or "").strip()
    try:
        sample = _store().open_sample(slide_id, notes, g.user.name)
    except StoreError as exc:
        abort(400, description=str(exc))
    session["sample"] = sample["id"]
    flash(gettext("Sample %(slide)s started: captured fields now go into it.", slide=sample["slide_id"]))
    if request.form.get("back") == "live":
        return redirect(url_for("live.page"))
    return redirect(url_for("samples.detail", sample_id=sample["id"]))


@bp.route("/samples/<sample_id>")
def detail(sample_id: str):
    store = _store()
    sample = store.get_sample(sample_id)
    if sample is None:
        abort(404, description=gettext("no sample %(id)s", id=sample_id))
    try:
        before = int(request.args["before"]) if request.args.get("before") else None
    except ValueError:
        abort(400, description="before: expected a record sequence number")
    frozen = sample["summary"] if sample["status"] == "finished" else None
    # a slide of fields shows what was frozen at Finish; a slide of cells is counted live (every
    # review, the [cells] settings in force)
    summary = frozen if frozen and frozen.get("kind") != "cells" else store.sample_summary(sample_id)
    page = queries.Filters(sample=sample_id, before=str(before) if before else None, limit=100)
    fields, _ = queries.list_results(store.conn, page, with_cells=False)  # field and cell records
    reviews = queries.reviews_for(current_app.extensions["smearscope"].conn(), [r["id"] for r in fields])
    next_before = fields[-1]["seq"] if len(fields) == 100 else None
    return render_template(
        "sample.html",
        sample=sample,
        summary=summary,
        fields=fields,
        reviews=reviews,
        next_before=next_before,
        **_gallery(sample_id, summary),
    )


def _gallery(sample_id: str, summary: dict) -> dict:
    """The gallery's groups and menu for a slide counted cell by cell (nothing for a field slide)."""
    if summary.get("kind") != "cells":
        return {"groups": [], "choices": []}
    store = _store()
    cells = store.sample_cells(sample_id)
    ids = list(dict.fromkeys(rid for rid, _ in cells))
    frames: dict[str, str | None] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" for _ in chunk)
        rows = store.conn.execute(f"SELECT id, image_sha256 FROM results WHERE id IN ({marks})", chunk)
        frames.update({r[0]: r[1] for r in rows})
    return {"groups": build_gallery(cells, summary["labels"], frames), "choices": choices(summary["labels"])}


def _cell_record(sample_id: str, record_id: str) -> dict:
    rec = _store().get_result(record_id)
    if rec is None or rec["sample_id"] != sample_id or rec["kind"] != "cells":
        abort(404, description=gettext("no cell record %(id)s in this sample", id=record_id))
    return rec


@bp.route("/samples/<sample_id>/cells/<record_id>/<int:index>.jpg")
def cell_image(sample_id: str, record_id: str, index: int):
    """One cell's thumbnail, cut from its stored frame (cached; the frame's other cells with it)."""
    rec = _cell_record(sample_id, record_id)
    boxes = {c["index"]: tuple(c["box"]) for c in rec["cells"]}
    if index not in boxes or not rec["image_sha256"]:
        abort(404)
    store = _store()
    path = cell_thumbnail(
        store.image_path(rec["image_sha256"]),
        store.data_dir / "thumbs",
        rec["image_sha256"],
        boxes[index],
        siblings=boxes,
    )
    if path is None:
        abort(404, description=gettext("image not on this station"))
    resp = send_file(path, mimetype="image/jpeg", max_age=86400)
    resp.headers["Cache-Control"] = "private, max-age=86400"
    return resp


@bp.route("/samples/<sample_id>/cells/<record_id>/<int:index>", methods=["POST"])
def reclassify(sample_id: str, record_id: str, index: int):
    """Review one cell: JSON {"label": <a label id or "not_a_cell">}. Answers the cell, the slide's new
    figures and the summary and gallery as HTML to put in place."""
    _cell_record(sample_id, record_id)
    body = request.get_json(silent=True) or {}
    label = body.get("label")
    if not isinstance(label, str) or not label:
        abort(400, description=gettext("choose a label for the cell"))
    try:
        cell = _store().review_cell(record_id, index, label, g.user.name)
    except StoreError as exc:
        abort(404 if str(exc).startswith("no ") else 400, description=str(exc))
    summary = _store().sample_summary(sample_id)
    sample = _store().get_sample(sample_id)
    gallery = _gallery(sample_id, summary)
    return jsonify(
        {
            "cell": cell.to_dict(),
            "slide": {
                key: summary[key]
                for key in ("counted", "target", "blasts", "blast_pct", "ci_low_pct", "ci_high_pct", "call")
            }
            | {"call_text": call_text(summary), "verified": verified_text(summary)},
            "summary_html": render_template("_cells_summary.html", summary=summary, sample=sample),
            "gallery_html": render_template("_cells_gallery.html", sample=sample, **gallery),
        }
    )


@bp.route("/samples/<sample_id>/finish", methods=["POST"])
def finish(sample_id: str):
    """Finishing freezes the summary for good, so it needs `confirm=yes` (the page's dialog sets it);
    without it the answer is a page that asks."""
    if request.form.get("confirm") != "yes":
        sample = _store().get_sample(sample_id)
        if sample is None:
            abort(404, description=gettext("no sample %(id)s", id=sample_id))
        return render_template("finish_confirm.html", sample=sample)
    try:
        sample = _store().finish_sample(sample_id)
    except StoreError as exc:
        abort(404, description=str(exc))
    if session.get("sample") == sample_id:
        session.pop("sample")
    flash(gettext("Sample %(slide)s finished; its summary is frozen.", slide=sample["slide_id"]))
    return redirect(url_for("samples.detail", sample_id=sample_id))


@bp.route("/samples/select", methods=["POST"])
def select():
    """Make an open sample the one this browser's captures and uploads go into."""
    sample_id = request.form.get("sample", "")
    sample = _store().get_sample(sample_id) if sample_id else None
    if sample is None or sample["status"] != "open":
        abort(400, description=gettext("only an open sample can receive fields"))
    session["sample"] = sample_id
    return redirect(url_for("live.page"))
