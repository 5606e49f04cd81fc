"""Accounts: users and roles, password hashing, API keys (stored hashed), login rate limiting, CSRF.

Everything here works on a plain sqlite3 connection to the device store (tables `users` and
`api_keys` of device/store/migrations.py), so the `smearscope users` command and the web page share it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import re
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
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
    language: str | None = None  # the page's language this user chose; None: the browser's

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
    return User(row["name"], row["role"], bool(row["disabled"]), row["password_hash"], row["language"])


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
    end_sessions(conn, name)
    conn.execute("DELETE FROM users WHERE name = ?", (name,))


def set_password(conn: sqlite3.Connection, name: str, password: str) -> None:
    """Change a password; every session of that user ends (the caller may open a new one)."""
    pw_hash = hash_password(password)
    if conn.execute("UPDATE users SET password_hash = ? WHERE name = ?", (pw_hash, name)).rowcount == 0:
        raise AuthError(f"no user {name!r}")
    end_sessions(conn, name)


def set_role(conn: sqlite3.Connection, name: str, role: str) -> None:
    check_role(role)
    if conn.execute("UPDATE users SET role = ? WHERE name = ?", (role, name)).rowcount == 0:
        raise AuthError(f"no user {name!r}")


def set_disabled(conn: sqlite3.Connection, name: str, disabled: bool) -> None:
    if conn.execute("UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name)).rowcount == 0:
        raise AuthError(f"no user {name!r}")
    if disabled:
        end_sessions(conn, name)


def set_language(conn: sqlite3.Connection, name: str, language: str | None) -> None:
    """The page's language for `name` (a code the page speaks, checked by the caller; None: the
    browser's)."""
    if conn.execute("UPDATE users SET language = ? WHERE name = ?", (language, name)).rowcount == 0:
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


# -- server-side sessions -------------------------------------------------------------------------
# The signed cookie carries only a random session id; the row in `web_sessions` is what makes it valid,
# so logout, a password change, disabling or removing a user end the session at once, everywhere.


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def create_session(conn: sqlite3.Connection, name: str, minutes: float) -> str:
    """A new session id for `name` (valid `minutes`); expired rows are cleared on the way."""
    sid = secrets.token_urlsafe(32)
    now = time.time()
    conn.execute("DELETE FROM web_sessions WHERE expires_at < ?", (_iso(now),))
    conn.execute(
        "INSERT INTO web_sessions (id_hash, user_name, created_at, expires_at) VALUES (?, ?, ?, ?)",
        (_key_hash(sid), name, _iso(now), _iso(now + minutes * 60)),
    )
    return sid


def session_user(conn: sqlite3.Connection, sid: str | None) -> str | None:
    """The user name a live (not ended, not expired) session id belongs to, else None."""
    if not sid:
        return None
    row = conn.execute(
        "SELECT user_name FROM web_sessions WHERE id_hash = ? AND expires_at >= ?",
        (_key_hash(sid), _iso(time.time())),
    ).fetchone()
    return row[0] if row else None


def end_session(conn: sqlite3.Connection, sid: str | None) -> None:
    if sid:
        conn.execute("DELETE FROM web_sessions WHERE id_hash = ?", (_key_hash(sid),))


def end_sessions(conn: sqlite3.Connection, name: str) -> int:
    return conn.execute("DELETE FROM web_sessions WHERE user_name = ?", (name,)).rowcount


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


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


def address_key(addr: str) -> str:
    """Failures are counted per IPv4 address and per IPv6 /64 (one host can hold a whole /64)."""
    if ":" in addr:
        try:
            net = ipaddress.IPv6Network(f"{addr}/64", strict=False)
            return f"a:{net.network_address}/64"
        except ValueError:
            return f"a:{addr}"
    return f"a:{addr}"


class LoginLimiter:
    """Slows password guessing without letting anyone lock a colleague out.

    - Per address (IPv6: per /64): `free_tries` failures are free, then every further attempt from
      that address waits a backoff doubling from 1 s up to `max_address_wait_s`.
    - Per account (existing users only): after `free_tries` failures from anywhere, attempts on the
      account are spaced out by a delay doubling up to `max_account_wait_s` (30 s by default): a
      delay, never a lock, so the owner gets in after at most that long. Addresses from which the
      account logged in successfully before (the owner's own machine) skip the account delay.
    - A success clears the address's and the account's counters; counters forget after `forget_s`
      without failures.
    - Memory is bounded without giving an attacker a flush: addresses (capped at `max_addresses`,
      least recently failed dropped first) and accounts are kept apart, and accounts are only
      counted for users that exist, so spraying addresses or made-up names never clears an account.
    In memory: a restart clears it, which is fine for a LAN device.
    """

    def __init__(
        self,
        free_tries: int = 5,
        max_address_wait_s: float = 900.0,
        max_account_wait_s: float = 30.0,
        forget_s: float = 3600.0,
        max_addresses: int = 10_000,
        clock=time.monotonic,
    ):
        self.free_tries = free_tries
        self.max_address_wait_s = max_address_wait_s
        self.max_account_wait_s = max_account_wait_s
        self.forget_s = forget_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._addresses: OrderedDict[str, _Failures] = OrderedDict()
        self._accounts: dict[str, _Failures] = {}
        self._trusted: dict[str, OrderedDict[str, None]] = {}
        self._lock = threading.Lock()

    def _wait(self, f: _Failures | None, cap: float, now: float) -> float:
        if f is None or f.count < self.free_tries:
            return 0.0
        delay = min(2.0 ** (f.count - self.free_tries), cap)
        return max(0.0, f.last + delay - now)

    def _live(self, table, key: str, now: float) -> _Failures | None:
        f = table.get(key)
        if f is not None and now - f.last >= self.forget_s:
            del table[key]
            return None
        return f

    def retry_after(self, addr: str, name: str) -> float:
        """Seconds until an attempt from `addr` on `name` is allowed again (0 = now)."""
        now = self._clock()
        akey, name = address_key(addr), name.lower()
        with self._lock:
            wait = self._wait(self._live(self._addresses, akey, now), self.max_address_wait_s, now)
            if akey not in self._trusted.get(name, ()):
                acc = self._live(self._accounts, name, now)
                wait = max(wait, self._wait(acc, self.max_account_wait_s, now))
        return wait

    def failed(self, addr: str, name: str, *, known_user: bool = True) -> None:
        now = self._clock()
        akey, name = address_key(addr), name.lower()
        with self._lock:
            f = self._live(self._addresses, akey, now) or _Failures()
            f.count, f.last = f.count + 1, now
            self._addresses[akey] = f
            self._addresses.move_to_end(akey)
            while len(self._addresses) > self.max_addresses:
                self._addresses.popitem(last=False)
            if known_user:
                a = self._live(self._accounts, name, now) or _Failures()
                a.count, a.last = a.count + 1, now
                self._accounts[name] = a

    def succeeded(self, addr: str, name: str) -> None:
        akey, name = address_key(addr), name.lower()
        with self._lock:
            self._addresses.pop(akey, None)
            self._accounts.pop(name, None)
            trusted = self._trusted.setdefault(name, OrderedDict())
            trusted[akey] = None
            trusted.move_to_end(akey)
            while len(trusted) > 8:
                trusted.popitem(last=False)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
