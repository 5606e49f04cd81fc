"""Rate limits on every hub route (Flask-Limiter, in-memory per process — several gunicorn workers each
count on their own, so the effective limit is N times the setting):

- per principal (the token, hashed; the address when there is none): `rate_limit`, one shared bucket
  across routes, so a runaway or hostile device cannot flood the hub;
- per address, failed authentication only (401 answers, API and dashboard login): `auth_fail_limit`,
  so tokens cannot be guessed quickly, without limiting the devices that authenticate properly.

Over a limit the answer is 429 with Retry-After; the device's sync worker backs off and retries.
Behind a reverse proxy set `proxy_hops` so the client address is the real one (X-Forwarded-For),
otherwise every client shares the proxy's address and bucket."""

from __future__ import annotations

import hashlib

from flask import Flask, Response, request
from flask_limiter import Limit, Limiter

EXEMPT_ENDPOINTS = ("healthz", "dashboard.static")


def _principal() -> str:
    auth = request.headers.get("Authorization", "")
    if auth:
        return "tok:" + hashlib.sha256(auth.encode("utf-8", "replace")).hexdigest()[:32]
    return "addr:" + (request.remote_addr or "?")


def _address() -> str:
    return request.remote_addr or "?"


def _failed_auth(resp: Response) -> bool:
    return resp.status_code == 401


def _exempt() -> bool:
    return request.endpoint in EXEMPT_ENDPOINTS


def init_limits(app: Flask, rate_limit: str, auth_fail_limit: str) -> Limiter | None:
    """Attach the limiter; an empty limit string turns that limit off (both empty: no limiter)."""
    limits = []
    if rate_limit:
        limits.append(Limit(rate_limit, key_function=_principal, scope="principal", shared=True))
    if auth_fail_limit:
        limits.append(
            Limit(
                auth_fail_limit,
                key_function=_address,
                scope="auth-failures",
                shared=True,
                deduct_when=_failed_auth,
                error_message="too many failed authentications from this address; wait and retry",
            )
        )
    if not limits:
        return None
    return Limiter(
        _address,
        app=app,
        default_limits=limits,
        default_limits_exempt_when=_exempt,
        storage_uri="memory://",
        strategy="moving-window",
        headers_enabled=True,
    )
