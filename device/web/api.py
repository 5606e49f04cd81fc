"""JSON API under /api/v1 (described in docs/openapi.yaml). The page's own scripts use it too.

Authentication: the browser session (with an `X-CSRF-Token` header on POST) or `Authorization:
Bearer KEY` (see `smearscope users apikey`)."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, g, jsonify, request, session

from common.wording import DISCLAIMER
from device.camera.profiles import ProfileError
from device.errors import SmearscopeError
from device.store.store import DiskFullError, StoreError
from device.web import advice, queries
from device.web.classify import classify_files
from device.web.history import export_response
from device.web.live import live_payload
from device.web.upload_check import UploadRejected

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _ext():
    return current_app.extensions["smearscope"]


def _error(status: int, error: str, **extra: str):
    resp = jsonify({"error": error, **extra})
    resp.status_code = status
    return resp


def _body() -> dict:
    if request.is_json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            abort(_error(400, "the body must be a JSON object"))
        return data
    return request.form.to_dict()


@bp.route("/classify", methods=["POST"])
def classify():
    try:
        records = classify_files(
            request.files.getlist("file"),
            request.form.get("sample"),
            g.user.name,
            request.form.get("um_per_px"),
        )
    except UploadRejected as exc:
        # error: the engineer's English reason; message: what to do, in the caller's language
        resp = _error(exc.status, exc.message, message=advice.upload_refusal(exc.kind, exc.message).sentence)
        if exc.status == 503:
            resp.headers["Retry-After"] = "30"
        return resp
    return jsonify({"disclaimer": DISCLAIMER, "results": records})


@bp.route("/results")
def results():
    ext = _ext()
    try:
        filters = queries.parse_filters(request.args, conn=_ext().conn())
    except queries.BadFilter as exc:
        return _error(400, str(exc))
    rows, cursor = queries.list_results(ext.conn(), filters)
    return jsonify({"results": rows, "next_before": cursor})


@bp.route("/results/<result_id>")
def result(result_id: str):
    ext = _ext()
    rec = ext.store.get_result(result_id)
    if rec is None:
        return _error(404, f"no record {result_id}")
    rec["reviews"] = ext.store.reviews_of(result_id)
    return jsonify(rec)


@bp.route("/results/<result_id>/review", methods=["POST"])
def review(result_id: str):
    data = _body()
    label = data.get("label") or None
    try:
        rec = _ext().store.add_review(result_id, label, str(data.get("comment") or "")[:2000], g.user.name)
    except StoreError as exc:
        return _error(404 if "no result" in str(exc) else 400, str(exc))
    return jsonify(rec), 201


@bp.route("/samples")
def samples():
    status = request.args.get("status") or None
    if status not in (None, "open", "finished"):
        return _error(400, "status: expected open or finished")
    rows = _ext().store.list_samples(status=status, before=request.args.get("before") or None, limit=50)
    return jsonify({"samples": rows, "next_before": rows[-1]["started_at"] if len(rows) == 50 else None})


@bp.route("/samples", methods=["POST"])
def sample_start():
    data = _body()
    try:
        sample = _ext().store.open_sample(
            str(data.get("slide_id") or ""), str(data.get("notes") or ""), g.user.name
        )
    except StoreError as exc:
        return _error(400, str(exc))
    if g.via == "session":
        session["sample"] = sample["id"]
    return jsonify(sample), 201


@bp.route("/samples/<sample_id>")
def sample(sample_id: str):
    store = _ext().store
    s = store.get_sample(sample_id)
    if s is None:
        return _error(404, f"no sample {sample_id}")
    if s["status"] == "open":
        s["summary"] = store.sample_summary(sample_id)
    return jsonify(s)


@bp.route("/samples/<sample_id>/finish", methods=["POST"])
def sample_finish(sample_id: str):
    try:
        s = _ext().store.finish_sample(sample_id)
    except StoreError as exc:
        return _error(404, str(exc))
    if session.get("sample") == sample_id:
        session.pop("sample")
    return jsonify(s)


@bp.route("/capture", methods=["POST"])
def capture():
    """Store the current live field in an open sample (`sample` in the body, else the page's one)."""
    ext = _ext()
    data = _body()
    sample_id = data.get("sample") or session.get("sample")
    if not sample_id:
        return _error(400, "no open sample: start a sample first")
    s = ext.store.get_sample(sample_id)
    if s is None:
        return _error(404, f"no sample {sample_id}")
    if s["status"] != "open":
        return _error(409, f"sample {s['slide_id']} is finished: start a new sample")
    try:
        rec = ext.services.capture_field(sample_id, g.user.name)
    except DiskFullError as exc:
        return _error(507, str(exc))
    except StoreError as exc:
        return _error(409, str(exc))
    except (SmearscopeError, LookupError) as exc:  # no classified field yet, or it failed the quality gate
        return _error(409, str(exc) or "no live frame to capture yet")
    if rec is None:
        return _error(409, "no live frame to capture yet")
    return jsonify({"record": rec, "summary": ext.store.sample_summary(sample_id)}), 201


@bp.route("/live")
def live():
    item = _ext().services.live.latest_result()
    if item is None:
        return jsonify({"seq": None, "result": None})
    return jsonify({"seq": item[0], "result": live_payload(item[1])})


@bp.route("/profiles")
def profiles():
    """The station's calibration profiles and the active one."""
    store = _ext().services.profiles
    try:
        items, active = store.list(), store.active_name()
    except ProfileError as exc:
        return _error(500, str(exc))
    return jsonify({"active": active, "profiles": [p.to_dict() for p in items]})


@bp.route("/profiles/active", methods=["POST"])
def profile_activate():
    """Switch the active profile (any logged-in user: the technician changes objective)."""
    name = str(_body().get("name") or "")
    try:
        p = _ext().services.set_active_profile(name, g.user.name)
    except ProfileError as exc:
        return _error(404 if "no profile" in str(exc) else 400, str(exc))
    return jsonify({"active": p.name, "profile": p.to_dict()})


@bp.route("/status")
def status():
    return jsonify(_ext().services.status())


@bp.route("/export")
def export():
    try:
        filters = queries.parse_filters(request.args, conn=_ext().conn())
    except queries.BadFilter as exc:
        return _error(400, str(exc))
    return export_response(filters, request.args.get("format", "json"))
