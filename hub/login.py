"""Who is logged in to the hub's pages: the server-side session behind the `sid` cookie, and the
decorator every page blueprint (dashboard, fleet, cells, export) puts on its views. A module of its own
so those blueprints reach it without importing one another."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import redirect, request, url_for
from flask import session as cookie

from hub.extensions import session
from hub.models import User, UserSession

SESSION_HOURS = 12  # a dashboard login lasts this long at most


def sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8")).hexdigest()


def current_user() -> User | None:
    """The logged-in user: the cookie's session id must name a live server-side session (logout, a new
    token or revoking the user delete it, so a copied old cookie stops working at once)."""
    sid = cookie.get("sid")
    if not isinstance(sid, str):
        return None
    s = session()
    row = s.get(UserSession, sid_hash(sid))
    if row is None:
        return None
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    if (datetime.now(UTC) - created).total_seconds() > SESSION_HOURS * 3600:
        s.delete(row)
        s.commit()
        return None
    user = s.get(User, row.user_id)
    return user if user is not None and not user.disabled else None


def login_required(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_user() is None:
            return redirect(url_for("dashboard.login", next=request.path))
        return fn(*args, **kwargs)

    return wrapper
