"""Request helpers the hub's JSON APIs share: token authentication (`requires("device", "user")`),
bounded request bodies (`json_body`: gzip and size limits, strict JSON) and `check_sha` for image
addresses. Imports no blueprint, so every blueprint (and `/metrics`) may import it."""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import abort, g, request
from sqlalchemy import update

from hub import jsonbody, tokens
from hub.extensions import hub_ext, session
from hub.models import Device
from hub.records import SHA256

LAST_SEEN_EVERY_S = 5.0  # write a device's last contact at most this often
MAX_TOKEN = 200  # tokens are 43 characters; anything much longer is not one


# --- authentication -------------------------------------------------------------------------------


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        abort(401, "missing bearer token (Authorization: Bearer <token>)")
    if len(token) > MAX_TOKEN:
        abort(401, "bad token: not a registered token")
    return token.strip()


def authenticate(kinds: tuple[str, ...]) -> None:
    token = _bearer()
    s = session()
    if "device" in kinds:
        dev = tokens.find_device(s, token)
        if dev is not None:
            g.device, g.user = dev, None
            _touch(dev)
            return
    if "user" in kinds:
        user = tokens.find_user(s, token)
        if user is not None:
            g.device, g.user = None, user
            return
    abort(401, f"bad token: not a registered {' or '.join(kinds)} token")


def _touch(dev: Device) -> None:
    now = datetime.now(UTC)
    last = dev.last_seen_at
    if last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    if last is None or (now - last).total_seconds() >= LAST_SEEN_EVERY_S:
        s = session()
        s.execute(
            update(Device)
            .where(Device.id == dev.id)
            .values(last_seen_at=now, last_address=(request.remote_addr or "")[:100])  # column width
        )
        s.commit()


def requires(*kinds: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            authenticate(kinds)
            return fn(*args, **kwargs)

        return wrapper

    return deco


# --- bodies ---------------------------------------------------------------------------------------


def request_body() -> bytes:
    """The request body, gunzipped when Content-Encoding says gzip; bounded before and after."""
    limit = int(hub_ext()["settings"].max_body_mb * 1024 * 1024)
    raw = request.get_data(cache=False)  # MAX_CONTENT_LENGTH already gives 413 on the raw size
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "gzip":
        abort(415, f"unsupported Content-Encoding {encoding!r} (use gzip or none)")
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(raw, limit + 1)
    except zlib.error as exc:
        abort(400, f"body is not valid gzip: {exc}")
    if len(out) > limit or d.unconsumed_tail:
        abort(413, f"decompressed body is larger than {limit} bytes")
    return out


def json_body() -> Any:
    """The JSON body; 400 when nested deeper than jsonbody.MAX_DEPTH, 422 when not strict JSON."""
    try:
        return jsonbody.loads(request_body())
    except jsonbody.BodyError as exc:
        abort(exc.status, str(exc))


def check_sha(sha: str) -> None:
    if not SHA256.match(sha):
        abort(404, "not a sha256 (64 lowercase hex digits)")
