"""Live view: the MJPEG stream of the newest frame, and the newest result as Server-Sent Events."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    has_app_context,
    has_request_context,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from flask_babel import gettext

from device.camera.profiles import ProfileError
from device.web import advice, i18n, live_cells, live_words, security

bp = Blueprint("live", __name__)

BOUNDARY = "frame"
SSE_MAX_S = 300  # a stream ends after 5 min and EventSource reconnects: no thread is held forever


def _live():
    return current_app.extensions["smearscope"].services.live


def labels_info(services) -> list[dict]:
    """[{id, display, malignant}] of the models in service (for bars and colours)."""
    try:
        info = services.ensemble_info()
    except Exception:  # noqa: BLE001 - the page still works without it
        return []
    for bundle in info or []:
        if bundle.get("labels"):
            return bundle["labels"]
    return []


@bp.route("/")
def page():
    ext = current_app.extensions["smearscope"]
    open_samples = ext.store.list_samples(status="open", limit=20) if g.user else []
    current = session.get("sample")
    if current not in {s["id"] for s in open_samples}:
        current = open_samples[0]["id"] if open_samples else None
    profiles, active = profile_choices(ext.services) if g.user else ([], None)
    return render_template(
        "live.html",
        labels=labels_info(ext.services),
        open_samples=open_samples,
        current_sample=current,
        readonly=g.user is None,
        profiles=profiles,
        active_profile=active,
        field_rule=advice.FIELD_RULE_TEXT,
        words=live_words.page_words(),
        scale=_scale_info(ext.services),
    )


def _scale_info(services) -> dict:
    try:
        return services.scale_info()
    except Exception:  # noqa: BLE001 - a stand-in without models: the page says "unknown"
        return {}


def profile_choices(services) -> tuple[list, str | None]:
    """The calibration profiles and the active one's name (([], None) when the file is unreadable)."""
    store = getattr(services, "profiles", None)  # a stand-in without profiles (tests, tools)
    if store is None:
        return [], None
    try:
        return store.list(), store.active_name()
    except ProfileError:
        return [], None


@bp.route("/live/profile", methods=["POST"])
def switch_profile():
    """The technician switches the active calibration profile (camera + objective) from the live page."""
    ext = current_app.extensions["smearscope"]
    try:
        p = ext.services.set_active_profile(request.form.get("profile", ""), g.user.name)
    except ProfileError as exc:
        abort(400, description=str(exc))
    flash(
        gettext(
            "Calibration profile: %(name)s (camera %(um)s µm/px).",
            name=p.name,
            um=i18n.scale_text(p.um_per_px),
        )
    )
    return redirect(url_for("live.page"))


def _part(jpeg: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    return head.encode() + jpeg + b"\r\n"


def mjpeg_frames(
    live, fps: float, heatmap: bool, stop_after_s: float | None = None, keepalive_s: float = 1.0
) -> Iterator[bytes]:
    """multipart/x-mixed-replace parts of the newest frame, at most `fps` a second. Frames in between
    are skipped, never queued, so a slow client sees the newest field, not a backlog. When no new
    frame comes (camera stopped) the last one is re-sent every `keepalive_s`: a write is how a
    disconnected client is noticed, so the worker thread is freed."""
    interval = 1.0 / fps
    seq = -1
    last: bytes | None = None
    sent_at = time.monotonic()
    started = time.monotonic()
    source = getattr(live, "latest_heatmap", None) if heatmap else None
    while stop_after_s is None or time.monotonic() - started < stop_after_s:
        t0 = time.monotonic()
        item = source() if source is not None else None
        if item is None and source is not None and last is None:
            source = None  # the models have no heatmap output: show the plain frames
        if source is not None:
            if item is not None and item[0] == seq:
                item = None
        else:
            item = live.wait_frame(seq, keepalive_s)
        if item is not None:
            seq, last = item
        if item is not None or (last is not None and time.monotonic() - sent_at >= keepalive_s):
            sent_at = time.monotonic()
            yield _part(last)
        rest = interval - (time.monotonic() - t0)
        if rest > 0:
            time.sleep(rest)


def _viewer() -> str:
    """Whose stream budget a request spends: the user's, or the address's on the open live view."""
    return f"user:{g.user.name}" if g.get("user") is not None else f"addr:{security.client_addr()}"


def _over_budget() -> Response:
    resp = jsonify({"error": "too many live streams open: the page shows still frames instead"})
    resp.status_code = 503
    resp.headers["Retry-After"] = "30"
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _budgeted(body: Iterator, mimetype: str) -> Response:
    """A streamed response that holds one place in the stream budget until it is closed. HEAD only
    asks whether a stream would be admitted now (the page's check before falling back to stills)."""
    budget = current_app.extensions["smearscope"].streams
    if request.method == "HEAD":
        return Response(status=200 if budget.has_room(_viewer()) else 503, mimetype=mimetype)
    release = budget.try_acquire(_viewer())
    if release is None:
        return _over_budget()
    resp = Response(
        stream_with_context(body),
        mimetype=mimetype,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    resp.call_on_close(release)
    return resp


@bp.route("/live/stream.mjpg")
def stream():
    ext = current_app.extensions["smearscope"]
    heatmap = request.args.get("heatmap") == "1"
    fps = ext.config.web.mjpeg_fps
    return _budgeted(
        mjpeg_frames(_live(), fps, heatmap),
        f"multipart/x-mixed-replace; boundary={BOUNDARY}",
    )


@bp.route("/live/heatmap.jpg")
def heatmap():
    item = getattr(_live(), "latest_heatmap", lambda: None)()
    if item is None:
        return Response("no heatmap: the models in service do not export one", 404, mimetype="text/plain")
    return Response(item[1], mimetype="image/jpeg", headers={"Cache-Control": "no-store"})


@bp.route("/live/frame.jpg")
def frame():
    """The newest frame as one JPEG: what the page polls when the stream budget is spent."""
    if request.args.get("heatmap") == "1":
        item = getattr(_live(), "latest_heatmap", lambda: None)()
        if item is not None:
            return Response(item[1], mimetype="image/jpeg", headers={"Cache-Control": "no-store"})
    item = _live().latest_frame()
    if item is None:
        return Response("no frame yet: is the camera running?", 404, mimetype="text/plain")
    return Response(item[1], mimetype="image/jpeg", headers={"Cache-Control": "no-store"})


@bp.route("/live/result.json")
def result():
    """The newest live result (what the page polls when the stream budget is spent)."""
    item = _live().latest_result()
    if item is None:
        return jsonify({"seq": None, "result": None})
    return jsonify({"seq": item[0], "result": live_payload(item[1])})


def _label_ids() -> list[str]:
    """The bundle's label ids (a cell's colour by its label's index), or none outside an app."""
    if not has_app_context():
        return []
    return [str(lb.get("id")) for lb in labels_info(current_app.extensions["smearscope"].services)]


def live_payload(result: dict) -> dict:
    """What the page needs of a live result (no image bytes). The cell keys (`cells`, `frame_size`,
    `field_line`, `slide`) are checked one by one (`device/web/live_cells.py`)."""
    keep = (
        "id",
        "label",
        "confidence",
        "probabilities",
        "abstained",
        "reason",
        "quality",
        "models",
        "captured_at",
        "sample_id",
        "display",
        "fps",
        "inference_ms",
        "stored",
        "heatmap",
        "state",
        "outlines",
        "tiles",
        "tile_labels",
        "um_per_px",
        "profile",
        "scale_check",
        "rule",
        "republished",
    )
    payload = {k: result[k] for k in keep if k in result}
    if any(k in result for k in live_cells.KEYS):
        payload.update(live_cells.cell_keys(result, _label_ids() if "cells" in result else ()))
    # the reader's words need the reader (a request); without one the figures go alone
    payload["view"] = live_words.view(result) if has_request_context() else None
    return payload


def sse_events(live, last_seq: int, max_s: float = SSE_MAX_S, keepalive_s: float = 5.0) -> Iterator[str]:
    yield "retry: 2000\n\n"
    seq = last_seq
    started = time.monotonic()
    current = live.latest_result()
    if current is not None and current[0] != seq:
        seq = current[0]
        yield f"id: {seq}\nevent: result\ndata: {json.dumps(live_payload(current[1]))}\n\n"
    while time.monotonic() - started < max_s:
        item = live.wait_result(seq, keepalive_s)
        if item is None:
            yield ": keepalive\n\n"
            continue
        seq, result = item
        yield f"id: {seq}\nevent: result\ndata: {json.dumps(live_payload(result))}\n\n"


@bp.route("/live/events")
def events():
    try:
        last = int(request.headers.get("Last-Event-ID", "-1"))
    except ValueError:
        last = -1
    return _budgeted(sse_events(_live(), last), "text/event-stream")
