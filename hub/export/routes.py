"""Dashboard: hub admins download reviewed fields, or reviewed cells as crops, as a training folder (a
zip stream of the same layout `smearscope-hub export-dataset [--cells]` writes; see
hub/export/dataset.py and hub/export/cells.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, render_template, request, stream_with_context
from sqlalchemy import select

from hub.export.cells import DEFAULT_SIDE_UM, CellExportOptions, iter_cells_zip, select_cells
from hub.export.dataset import ExportError, ExportFilter, image_loader, iter_zip, parse_since, select_entries
from hub.extensions import session
from hub.login import current_user, login_required
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


def _labels_arg(name: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in request.args.get(name, "").split(",") if x.strip())


def _cell_options() -> CellExportOptions | None:
    """The cells export's options when the form asks for cells (`cells=1`), else None."""
    if request.args.get("cells") != "1":
        return None
    try:
        side = float(request.args.get("cell_side_um") or DEFAULT_SIDE_UM)
    except ValueError as exc:
        raise ExportError("cell side: must be a number of µm") from exc
    return CellExportOptions(side, _labels_arg("blast_labels"), _labels_arg("normal_labels"))


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
            opts = _cell_options()
            preview = select_entries(s, flt) if opts is None else select_cells(s, flt, opts)
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
        opts = _cell_options()
        if opts is not None:  # refused before the stream starts (a 400, not a broken zip)
            select_cells(session(), flt, opts)
    except ExportError as exc:
        abort(400, str(exc))
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    root = f"smearscope-{'cells' if opts is not None else 'dataset'}-{stamp}"

    def chunks():  # noqa: ANN202
        s = session()
        if opts is not None:
            yield from iter_cells_zip(select_cells(s, flt, opts), flt, opts, image_loader(s), root)
        else:
            yield from iter_zip(select_entries(s, flt), flt, image_loader(s), root)

    return Response(
        stream_with_context(chunks()),
        mimetype="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{root}.zip"'},
    )
