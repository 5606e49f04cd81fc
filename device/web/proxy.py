"""The page behind the station's HTTPS proxy (nginx on the same machine, deploy/nginx/).

nginx terminates TLS and passes requests to the daemon on 127.0.0.1 with `X-Forwarded-Proto` and
`X-Forwarded-For`. Those headers are believed only from a loopback peer (the proxy), one hop deep
(werkzeug's ProxyFix); from anyone else they are removed, so a client on the clinic network cannot
claim to be HTTPS or to come from another address (login limits and stream budgets are per address).

Session cookies carry `Secure` per `[web] secure_cookies`: "auto" (whenever the request came over
HTTPS, so `make run` keeps working over plain HTTP on 127.0.0.1), "always" or "never".
"""

from __future__ import annotations

import ipaddress
from typing import Any

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

FORWARDED_HEADERS = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_X_FORWARDED_PREFIX",
    "HTTP_FORWARDED",
)
SECURE_COOKIE_MODES = ("auto", "always", "never")


def is_loopback(addr: str | None) -> bool:
    try:
        return ipaddress.ip_address((addr or "").split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class LoopbackProxyFix:
    """ProxyFix (x_for=1, x_proto=1) for requests whose peer is a loopback address; the forwarded
    headers of every other request are dropped before the app sees them."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.fixed = ProxyFix(app, x_for=1, x_proto=1)

    def __call__(self, environ: dict, start_response):
        if is_loopback(environ.get("REMOTE_ADDR")):
            return self.fixed(environ, start_response)
        for key in FORWARDED_HEADERS:
            environ.pop(key, None)
        return self.app(environ, start_response)


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session whose `Secure` flag follows `[web] secure_cookies`."""

    def __init__(self, mode: str) -> None:
        if mode not in SECURE_COOKIE_MODES:
            raise ValueError(f"secure_cookies must be one of {SECURE_COOKIE_MODES}, not {mode!r}")
        self.mode = mode

    def get_cookie_secure(self, app: Flask) -> bool:
        if self.mode == "auto":
            return request.is_secure
        return self.mode == "always"


def install(app: Flask, secure_cookies: str) -> None:
    """Wrap `app` for the proxy and set its session cookie policy."""
    app.wsgi_app = LoopbackProxyFix(app.wsgi_app)  # type: ignore[method-assign]
    app.session_interface = SessionInterface(secure_cookies)
