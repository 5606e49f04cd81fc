"""The slide report: a printable page (`/samples/<id>/report`, print stylesheet) and the same report as a
PDF made on the station (`/samples/<id>/report.pdf?paper=a4|letter`)."""

from __future__ import annotations

import re

from flask import Blueprint, Response, abort, current_app, render_template, request

from device.localtime import station_zone
from device.report.pdf import MAX_REVIEWS, PAPERS, render_pdf
from device.report.slide import ReportError, SlideReport, build_slide_report

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


@bp.route("/samples/<sample_id>/report")
def page(sample_id: str):
    return render_template("report.html", report=_report(sample_id), max_reviews=MAX_REVIEWS)


@bp.route("/samples/<sample_id>/report.pdf")
def pdf(sample_id: str):
    paper = (request.args.get("paper") or "a4").lower()
    if paper not in PAPERS:
        abort(400, description=f"paper: expected a4 or letter, not {paper!r}")
    report = _report(sample_id)
    body = render_pdf(report, paper)
    name = _UNSAFE.sub("_", report.slide_id).strip("_")[:60] or report.sample_id[:8]
    return Response(
        body,
        mimetype="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="smearscope-report-{name}.pdf"',
            "Cache-Control": "no-store",
        },
    )
