"""The slide report: a printable page (`/samples/<id>/report`, print stylesheet) and the same report as a
PDF made on the station (`/samples/<id>/report.pdf?paper=a4|letter`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from flask import Blueprint, Response, abort, current_app, render_template, request
from flask_babel import format_percent, gettext

from device.localtime import station_zone
from device.report.pdf import MAX_REVIEWS, PAPERS, Words, render_pdf
from device.report.slide import ReportError, SlideReport, build_slide_report
from device.web import advice, cell_words, i18n

bp = Blueprint("report", __name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _report(sample_id: str) -> SlideReport:
    ext = current_app.extensions["smearscope"]
    try:
        in_service = ext.services.ensemble_info() or []
    except Exception:  # noqa: BLE001 - the report still prints without the models' keys
        in_service = []
    try:
        return build_slide_report(
            ext.store,
            sample_id,
            zone=station_zone(ext.config.device.timezone),
            in_service=in_service,
            station=ext.config.device.id or ext.store.device_id,
        )
    except ReportError as exc:
        abort(404, description=str(exc))


def pdf_words(report: SlideReport) -> Words:
    """The PDF in the asking user's language: Flask-Babel's words and formats, dates in the station's
    zone with the zone shown (as on the page)."""
    sample = current_app.extensions["smearscope"].store.get_sample(report.sample_id) or {}
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    summary = {
        "call": report.call,
        "confident_fields": report.confident_fields,
        "top_malignant_label": report.top_malignant_label,
        "call_text": report.call_text,
    }
    rule = advice.summary_rule()
    if report.cells is not None:  # a slide counted cell by cell: its differential's call and rule
        summary = report.cells.summary
        rule = cell_words.rule_text(summary)
    return Words(
        gettext=gettext,
        percent=lambda x: format_percent(x, "#,##0.0%"),
        started=i18n.when(sample.get("started_at")),
        finished=i18n.when(sample.get("finished_at")),
        printed=i18n.when(now),
        call_text=advice.summary_call(summary),
        rule=rule,
        disclaimer=str(advice.DISCLAIMER_TEXT),
        lang=i18n.lang(),
        when=i18n.when,
    )


@bp.route("/samples/<sample_id>/report")
def page(sample_id: str):
    return render_template("report.html", report=_report(sample_id), max_reviews=MAX_REVIEWS)


@bp.route("/samples/<sample_id>/report.pdf")
def pdf(sample_id: str):
    paper = (request.args.get("paper") or "a4").lower()
    if paper not in PAPERS:
        abort(400, description=gettext("paper: expected a4 or letter, not %(paper)s", paper=repr(paper)))
    report = _report(sample_id)
    body = render_pdf(report, paper, words=pdf_words(report))
    name = _UNSAFE.sub("_", report.slide_id).strip("_")[:60] or report.sample_id[:8]
    return Response(
        body,
        mimetype="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="smearscope-report-{name}.pdf"',
            "Cache-Control": "no-store",
        },
    )
