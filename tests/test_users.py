"""`smearscope users ...` on the same store as `run`, and the account rules behind it."""

from __future__ import annotations

import argparse
import io

import pytest

from device.commands import users
from device.errors import SmearscopeError
from device.store.store import Store
from device.web import auth


def run(argv: list[str], monkeypatch, stdin: str = "") -> int:
    parser = argparse.ArgumentParser(prog="smearscope")
    sub = parser.add_subparsers(dest="command")
    users.register(sub)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("SMEARSCOPE_SECRET_KEY", raising=False)
    monkeypatch.setattr("device.config.SYSTEM_CONFIG", tmp_path / "absent.toml")
    return tmp_path / "data"


def test_add_passwd_apikey_remove(data_dir, monkeypatch, capsys):
    d = ["--data-dir", str(data_dir)]
    assert run(["users", "add", "alice", "--role", "admin", *d], monkeypatch, "first-pass-1\n") == 0
    conn = Store(data_dir).conn
    assert auth.verify_password(conn, "alice", "first-pass-1").role == "admin"
    assert run(["users", "passwd", "alice", *d], monkeypatch, "second-pass-2\n") == 0
    assert auth.verify_password(conn, "alice", "first-pass-1") is None
    assert auth.verify_password(conn, "alice", "second-pass-2") is not None
    capsys.readouterr()
    assert run(["users", "apikey", "alice", *d], monkeypatch) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("ssk_") and auth.verify_api_key(conn, key).name == "alice"
    stored = conn.execute("SELECT key_hash FROM api_keys").fetchone()[0]
    assert key not in stored and len(stored) == 64  # only the sha256 is kept
    run(["users", "list", *d], monkeypatch)
    assert "alice\tadmin\tactive\t1 key(s)" in capsys.readouterr().out
    assert run(["users", "remove", "alice", *d], monkeypatch) == 0
    assert auth.get_user(conn, "alice") is None and auth.verify_api_key(conn, key) is None


def test_password_hash_is_scrypt_not_plain(data_dir, monkeypatch):
    run(["users", "add", "bob", "--data-dir", str(data_dir)], monkeypatch, "bob-password\n")
    h = Store(data_dir).conn.execute("SELECT password_hash FROM users").fetchone()[0]
    assert h.startswith("scrypt:") and "bob-password" not in h


@pytest.mark.parametrize(
    ("argv", "stdin", "words"),
    [
        (["users", "add", "carol"], "short\n", "too short"),
        (["users", "add", "../carol"], "long-enough-1\n", "bad user name"),
        (["users", "add", "dave"], "", "no password"),
        (["users", "passwd", "nobody"], "long-enough-1\n", "no user"),
        (["users", "remove", "nobody"], "", "no user"),
        (["users", "apikey", "nobody"], "", "no user"),
    ],
)
def test_errors_are_messages(data_dir, monkeypatch, argv, stdin, words):
    with pytest.raises(SmearscopeError, match=words):
        run([*argv, "--data-dir", str(data_dir)], monkeypatch, stdin)


def test_duplicate_user(data_dir, monkeypatch):
    d = ["--data-dir", str(data_dir)]
    run(["users", "add", "erin", *d], monkeypatch, "long-enough-1\n")
    with pytest.raises(SmearscopeError, match="already exists"):
        run(["users", "add", "erin", *d], monkeypatch, "long-enough-1\n")


def test_login_limiter_backs_off_per_address_and_delays_per_account():
    now = [0.0]
    lim = auth.LoginLimiter(free_tries=3, max_account_wait_s=30, clock=lambda: now[0])
    for _ in range(3):
        assert lim.retry_after("1.2.3.4", "x") == 0
        lim.failed("1.2.3.4", "x")
    assert lim.retry_after("1.2.3.4", "x") == pytest.approx(1)  # backoff starts at 1 s
    assert lim.retry_after("9.9.9.9", "x") == pytest.approx(1)  # the account is delayed, not locked
    assert lim.retry_after("1.2.3.4", "other") > 0  # and the address for any name
    for _ in range(20):  # an attacker keeps going from one address
        now[0] += 1000
        lim.failed("1.2.3.4", "x")
    assert lim.retry_after("1.2.3.4", "x") == pytest.approx(900)  # address backoff capped at 15 min
    assert lim.retry_after("9.9.9.9", "x") <= 30  # the owner waits at most 30 s, from anywhere
    now[0] += 31
    assert lim.retry_after("9.9.9.9", "x") == 0


def test_csrf_compare():
    t = auth.new_csrf_token()
    assert auth.csrf_ok(t, t) and not auth.csrf_ok(t, t + "x") and not auth.csrf_ok(None, None)
