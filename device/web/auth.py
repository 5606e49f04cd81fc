"""Accounts: users and roles, password hashing, API keys (stored hashed), login rate limiting, CSRF.

Everything here works on a plain sqlite3 connection to the device store (tables `users` and
`api_keys` of device/store/migrations.py), so the `smearscope users` command and the web page share it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from werkzeug.security import check_password_hash, generate_password_hash

from device.errors import SmearscopeError

ROLES = ("technician", "admin")
MIN_PASSWORD = 8
API_KEY_PREFIX = "ssk_"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
# Checked against when the user does not exist, so a missing user costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-real-password", method="scrypt")


class AuthError(SmearscopeError):
    """A user/role/password problem; the message is meant for the person typing."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    disabled: bool = False
    password_hash: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def session_stamp(self) -> str:
        """Changes when the password changes, so a new password logs out the old sessions."""
        return hashlib.sha256(self.password_hash.encode()).hexdigest()[:16]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise AuthError(
            f"bad user name {name!r}: 1-64 letters, digits or . _ @ - (starting with a letter or digit)"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AuthError(f"bad role {role!r}: expected one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD:
        raise AuthError(f"password too short: at least {MIN_PASSWORD} characters")
    return password


def hash_password(password: str) -> str:
    return generate_password_hash(check_password(password), method="scrypt")


def _row_user(row: sqlite3.Row | None) -> User | None:
    if row is None:
        return None
    return User(row["name"], row["role"], bool(row["disabled"]), row["password_hash"])


def get_user(conn: sqlite3.Connection, name: str) -> User | None:
    return _row_user(conn.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone())


def list_users(conn: sqlite3.Connection) -> list[dict]:
    rows = conn.execute(
        "SELECT u.name, u.role, u.created_at, u.disabled, "
        "(SELECT COUNT(*) FROM api_keys k WHERE k.user_name = u.name) AS api_keys "
        "FROM users u ORDER BY u.name"
    ).fetchall()
    return [dict(r) for r in rows]


def add_user(conn: sqlite3.Connection, name: str, role: str, password: str) -> User:
    check_name(name)
    check_role(role)
    pw_hash = hash_password(password)
    try:
        conn.execute(
            "INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)",
            (name, role, pw_hash, _now()),
        )
    except sqlite3.IntegrityError as exc:
        raise AuthError(f"user {name!r} already exists (use `smearscope users passwd {name}`)") from exc
    return User(name, role, False, pw_hash)


def remove_user(conn: sqlite3.Connection, name: str) -> None:
    if get_user(conn, name) is None:
        raise AuthError(f"no user {name!r}")
    conn.execute("DELETE FROM api_keys WHERE user_name = ?", (name,))
    conn.execute("DELETE FROM users WHERE name = ?", (name,))


def set_password(conn: sqlite3.Connection, name: str, password: str) -> None:
    pw_hash = hash_password(password)
    if conn.execute("UPDATE users SET password_hash = ? WHERE name = ?", (pw_hash, name)).rowcount == 0:
        raise AuthError(f"no user {name!r}")


def set_role(conn: sqlite3.Connection, name: str, role: str) -> None:
    check_role(role)
    if conn.execute("UPDATE users SET role = ? WHERE name = ?", (role, name)).rowcount == 0:
        raise AuthError(f"no user {name!r}")


def set_disabled(conn: sqlite3.Connection, name: str, disabled: bool) -> None:
    if conn.execute("UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name)).rowcount == 0:
        raise AuthError(f"no user {name!r}")


def count_admins(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0").fetchone()[0]


def verify_password(conn: sqlite3.Connection, name: str, password: str) -> User | None:
    """The user when the name and password match and the account is enabled, else None."""
    user = get_user(conn, name)
    if user is None:
        check_password_hash(_DUMMY_HASH, password or "")
        return None
    if not check_password_hash(user.password_hash, password or "") or user.disabled:
        return None
    return user


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key(conn: sqlite3.Connection, name: str) -> str:
    """Make a key for `name`; only its sha256 is stored, so the returned key is shown once."""
    if get_user(conn, name) is None:
        raise AuthError(f"no user {name!r}")
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO api_keys (user_name, key_hash, created_at) VALUES (?, ?, ?)",
        (name, _key_hash(key), _now()),
    )
    return key


def revoke_api_keys(conn: sqlite3.Connection, name: str) -> int:
    return conn.execute("DELETE FROM api_keys WHERE user_name = ?", (name,)).rowcount


def verify_api_key(conn: sqlite3.Connection, key: str) -> User | None:
    """The enabled user a key belongs to, else None. A key is random (256 bits), so a plain sha256
    lookup is safe; the comparison happens inside the index, not in Python."""
    if not key or not key.startswith(API_KEY_PREFIX):
        return None
    row = conn.execute(
        "SELECT k.id, u.* FROM api_keys k JOIN users u ON u.name = k.user_name WHERE k.key_hash = ?",
        (_key_hash(key),),
    ).fetchone()
    user = _row_user(row)
    if user is None or user.disabled:
        return None
    _touch_key(conn, row["id"])
    return user


def _touch_key(conn: sqlite3.Connection, key_id: int) -> None:
    """Record when a key was last used: at most once a minute, and best effort — a full disk or a
    busy database must not turn a valid key into a 500."""
    now = _now()
    cutoff = datetime.now(UTC).timestamp() - 60
    stale = datetime.fromtimestamp(cutoff, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    with contextlib.suppress(sqlite3.Error):
        conn.execute(
            "UPDATE api_keys SET last_used = ? WHERE id = ? AND (last_used IS NULL OR last_used < ?)",
            (now, key_id, stale),
        )


class LoginLimiter:
    """Sliding-window limit on failed logins, per client address and per user name.

    `max_failures` failures within `window_s` block further attempts from that address (or for that
    name) until the oldest failure leaves the window. In memory: a restart clears it, which is fine
    for a LAN device (the point is to make guessing slow, not to keep an audit trail).
    """

    def __init__(self, max_failures: int = 5, window_s: float = 300.0, clock=time.monotonic):
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _keys(self, addr: str, name: str) -> list[str]:
        return [f"a:{addr}", f"u:{name.lower()}"]

    def retry_after(self, addr: str, name: str) -> float:
        """Seconds until an attempt is allowed again (0 = allowed now)."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for k in self._keys(addr, name):
                q = self._fails.get(k)
                if not q:
                    continue
                while q and now - q[0] >= self.window_s:
                    q.popleft()
                if len(q) >= self.max_failures:
                    wait = max(wait, self.window_s - (now - q[0]))
        return wait

    def failed(self, addr: str, name: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._fails) > 10_000:  # bound memory against a spray of names
                self._fails.clear()
            for k in self._keys(addr, name):
                self._fails.setdefault(k, deque()).append(now)

    def succeeded(self, addr: str, name: str) -> None:
        with self._lock:
            self._fails.pop(f"u:{name.lower()}", None)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
