"""The page behind the station's nginx: forwarded headers are believed from 127.0.0.1 only, and the
session cookie is Secure whenever the request came over HTTPS (`[web] secure_cookies = "auto"`),
while plain HTTP on 127.0.0.1 (`make run`) still logs in."""

from __future__ import annotations

from pathlib import Path

import pytest
from webkit import login, make_app

from device.config import ConfigError, load_config
from device.web.proxy import LoopbackProxyFix, is_loopback

HTTPS = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"}


def _session_cookie(resp) -> str:
    cookies = [
        v for k, v in resp.headers.items() if k == "Set-Cookie" and v.startswith("smearscope_session=")
    ]
    assert cookies, f"no session cookie in {resp.headers}"
    return cookies[-1]


def _attrs(cookie: str) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}


def test_cookie_secure_when_the_loopback_proxy_says_https(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    client = app.test_client()
    resp = client.get("/login", headers=HTTPS, environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert resp.status_code == 200
    assert "secure" in _attrs(_session_cookie(resp))


def test_forwarded_proto_from_elsewhere_is_ignored(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    client = app.test_client()
    resp = client.get("/login", headers=HTTPS, environ_base={"REMOTE_ADDR": "192.0.2.50"})
    assert resp.status_code == 200
    assert "secure" not in _attrs(_session_cookie(resp))


def test_plain_http_on_loopback_logs_in_without_secure(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path)
    client = app.test_client()
    resp = login(client)
    assert resp.status_code == 302 and "/login" not in resp.headers["Location"]
    assert "secure" not in _attrs(_session_cookie(resp))
    assert client.get("/").status_code == 200


@pytest.mark.parametrize(("mode", "secure"), [("always", True), ("never", False)])
def test_secure_cookies_setting_overrides(tmp_path: Path, mode: str, secure: bool) -> None:
    app, _ = make_app(tmp_path, secure_cookies=mode)
    plain = app.test_client().get("/login", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    https = app.test_client().get("/login", headers=HTTPS, environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert ("secure" in _attrs(_session_cookie(plain))) is secure
    assert ("secure" in _attrs(_session_cookie(https))) is secure


def test_secure_cookies_value_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[web\] secure_cookies"):
        load_config(system_config=None, env={}, overrides={"web": {"secure_cookies": "yes"}})


def _seen(remote: str, headers: dict[str, str]) -> dict:
    seen: dict = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [])
        return [b""]

    environ = {"REMOTE_ADDR": remote, "wsgi.url_scheme": "http", "REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    LoopbackProxyFix(app)(environ, lambda *a: None)
    return seen


@pytest.mark.parametrize("proxy", ["127.0.0.1", "::1"])
def test_client_address_and_scheme_come_from_the_loopback_proxy(proxy: str) -> None:
    env = _seen(proxy, {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
    assert env["wsgi.url_scheme"] == "https"
    assert env["REMOTE_ADDR"] == "203.0.113.9"


def test_only_one_forwarded_hop_is_believed() -> None:
    # a client's own X-Forwarded-For before the proxy's value is not taken as its address
    env = _seen("127.0.0.1", {"X-Forwarded-For": "10.9.9.9, 203.0.113.9"})
    assert env["REMOTE_ADDR"] == "203.0.113.9"


def test_a_direct_client_cannot_forge_forwarded_headers() -> None:
    env = _seen("192.0.2.50", {"X-Forwarded-Proto": "https", "X-Forwarded-For": "127.0.0.1"})
    assert env["wsgi.url_scheme"] == "http"
    assert env["REMOTE_ADDR"] == "192.0.2.50"
    assert "HTTP_X_FORWARDED_FOR" not in env and "HTTP_X_FORWARDED_PROTO" not in env


@pytest.mark.parametrize(
    ("addr", "loop"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("192.0.2.1", False),
        ("", False),
        ("x", False),
    ],
)
def test_is_loopback(addr: str, loop: bool) -> None:
    assert is_loopback(addr) is loop
