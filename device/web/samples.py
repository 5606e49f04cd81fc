"""Samples (slides): start one with its slide id and notes, follow its summary, finish it."""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext

from device.store.store import StoreError
from device.web import queries

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
    summary = (sample["status"] == "finished" and sample["summary"]) or store.sample_summary(sample_id)
    fields = store.list_results(sample=sample_id, before_seq=before, limit=100)
    reviews = queries.reviews_for(current_app.extensions["smearscope"].conn(), [r["id"] for r in fields])
    next_before = fields[-1]["seq"] if len(fields) == 100 else None
    return render_template(
        "sample.html", sample=sample, summary=summary, fields=fields, reviews=reviews, next_before=next_before
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
