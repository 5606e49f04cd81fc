"""Sessions end on logout and password change (server-side session rows), and failed logins slow an
attacker without locking the owner out (issue 13, items 5 and 6)."""

from __future__ import annotations

from device.web import auth
from tests.webkit import PASSWORD, csrf_of, login, token_of


def _cookie(client) -> str:
    return client.get_cookie("smearscope_session").value


def test_logout_ends_the_session_on_the_server(app_svc):
    app = app_svc[0]
    admin = app.test_client()
    login(admin, "admin")
    stolen = _cookie(admin)
    assert admin.get("/admin/users").status_code == 200
    admin.post("/logout", data={"csrf_token": token_of(admin)})
    replay = app.test_client()
    replay.set_cookie("smearscope_session", stolen)  # the old cookie, replayed after logout
    r = replay.get("/admin/users")
    assert r.status_code == 302 and "/login" in r.headers["Location"]


def test_password_change_ends_other_sessions(app_svc):
    app, services = app_svc
    other = app.test_client()
    login(other)
    me = app.test_client()
    login(me)
    r = me.post(
        "/account",
        data={
            "current": PASSWORD,
            "new": "new-pass-123",
            "repeat": "new-pass-123",
            "csrf_token": token_of(me),
        },
    )
    assert r.status_code == 302
    assert me.get("/history").status_code == 200  # this browser got a fresh session
    assert other.get("/history").status_code == 302  # the other one is logged out
    # the CLI's `smearscope users passwd` ends the web sessions too
    auth.set_password(services.store.conn, "tech", "third-pass-123")
    assert me.get("/history").status_code == 302


def test_disabling_a_user_ends_their_sessions(app_svc):
    app, services = app_svc
    c = app.test_client()
    login(c)
    auth.set_disabled(services.store.conn, "tech", True)
    assert c.get("/history").status_code == 302


def _fail(client, name: str, addr: str):
    token = csrf_of(client)
    return client.post(
        "/login",
        data={"username": name, "password": "wrong-wrong", "csrf_token": token},
        environ_base={"REMOTE_ADDR": addr},
    )


def test_attacker_cannot_lock_the_owner_out(app_svc):
    app, _ = app_svc
    attacker = app.test_client()
    for _ in range(5):
        assert _fail(attacker, "tech", "10.0.0.66").status_code == 401
    assert _fail(attacker, "tech", "10.0.0.66").status_code == 429  # the attacker's address backs off
    owner = app.test_client()
    token = csrf_of(owner)
    # the owner logged in from this address before: the account delay does not apply to it
    ext = app.extensions["smearscope"]
    ext.limiter.succeeded("10.0.0.7", "tech")
    for _ in range(5):
        _fail(app.test_client(), "tech", "10.0.0.66")
    r = owner.post(
        "/login",
        data={"username": "tech", "password": PASSWORD, "csrf_token": token},
        environ_base={"REMOTE_ADDR": "10.0.0.7"},
    )
    assert r.status_code == 302
    # a new address meets only a short, capped delay (never a lock)
    assert ext.limiter.retry_after("10.0.0.8", "tech") <= ext.limiter.max_account_wait_s


def test_spraying_addresses_does_not_flush_the_counters(app_svc):
    app, _ = app_svc
    lim = app.extensions["smearscope"].limiter
    lim.max_addresses = 50
    for _ in range(6):
        lim.failed("10.0.0.66", "tech")
    for i in range(500):  # many other addresses, many made-up names
        lim.failed(f"10.1.{i // 250}.{i % 250}", f"nobody{i}", known_user=False)
    assert lim.retry_after("10.0.0.99", "tech") > 0  # the account's delay survived the spray
    assert len(lim._addresses) <= 50  # and memory stayed bounded
