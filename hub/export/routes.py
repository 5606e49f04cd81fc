"""Dashboard: hub admins download reviewed fields as a training folder (a zip stream of the same
layout `smearscope-hub export-dataset` writes; see hub/export/dataset.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, render_template, request, stream_with_context
from sqlalchemy import select

from hub.dashboard import current_user, login_required
from hub.export.dataset import ExportError, ExportFilter, image_loader, iter_zip, parse_since, select_entries
from hub.extensions import session
from hub.models import Device, User

dataset_export = Blueprint("dataset_export", __name__)


def _is_admin(user: User | None) -> bool:
    return bool(user is not None and user.admin and not user.disabled)


@dataset_export.app_context_processor
def _admin_flag() -> dict[str, Any]:
    return {"hub_admin": _is_admin(current_user())}


def _require_admin() -> None:
    if not _is_admin(current_user()):
        abort(403, "exporting training data is for hub admins (smearscope-hub users admin NAME)")


def _filter_from_args() -> ExportFilter:
    since = request.args.get("since", "").strip()
    return ExportFilter(
        since=parse_since(since) if since else None,
        devices=tuple(d for d in request.args.getlist("device") if d),
        disagreements_only=request.args.get("disagreements_only") == "1",
        include_unreviewed=request.args.get("include_unreviewed") == "1",
    )


@dataset_export.get("/export/dataset")
@login_required
def form() -> Any:
    _require_admin()
    s = session()
    devices = list(s.scalars(select(Device.name).order_by(Device.name)))
    error = preview = None
    flt = ExportFilter()
    if request.args:
        try:
            flt = _filter_from_args()
            preview = select_entries(s, flt)
        except ExportError as exc:
            error = str(exc)
    return render_template(
        "export_dataset.html", devices=devices, flt=flt, preview=preview, error=error, args=request.args
    ), (400 if error else 200)


@dataset_export.get("/export/dataset.zip")
@login_required
def download() -> Response:
    _require_admin()
    try:
        flt = _filter_from_args()
    except ExportError as exc:
        abort(400, str(exc))
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    root = f"smearscope-dataset-{stamp}"

    def chunks():  # noqa: ANN202
        s = session()
        sel = select_entries(s, flt)
        yield from iter_zip(sel, flt, image_loader(s), root)

    return Response(
        stream_with_context(chunks()),
        mimetype="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{root}.zip"'},
    )
