"""Device and user tokens: random, shown once, stored only as sha256 (they are 256-bit random, so a
fast hash is enough; a slow password hash would only cost time on every request)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hub import names
from hub.models import Device, User, UserSession


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_device(session: Session, name: str) -> str:
    """Register a device; returns its token (the only time it is visible). A device's name is checked
    like an export label (`hub.names`: it names folders and files of exports and reports), and must
    differ from every other device's name ignoring case."""
    name = names.check(name.strip(), "device name")
    clash = [d for d in session.scalars(select(Device.name)) if names.fold(d) == names.fold(name)]
    if clash and clash != [name]:
        raise ValueError(f"device {clash[0]!r} already exists (names are compared ignoring case)")
    return _add(session, Device, name)


def add_user(session: Session, name: str) -> str:
    """Register a person who reads the hub; returns the token."""
    return _add(session, User, name)


def _add(session: Session, model: type[Device] | type[User], name: str) -> str:
    name = name.strip()
    if not name:
        raise ValueError("the name must not be empty")
    if session.scalar(select(model).where(model.name == name)) is not None:
        raise ValueError(f"{model.__tablename__[:-1]} {name!r} already exists")
    token = new_token()
    session.add(model(name=name, token_hash=token_hash(token), created_at=datetime.now(UTC), disabled=False))
    session.commit()
    return token


def set_admin(session: Session, name: str, admin: bool) -> None:
    """Give a user the hub-admin role (dashboard dataset export), or take it away."""
    row = _get(session, User, name)
    row.admin = admin  # type: ignore[union-attr]
    session.commit()


def revoke(session: Session, model: type[Device] | type[User], name: str) -> None:
    """Disable a lost device or a person who left: their token stops working at once."""
    row = _get(session, model, name)
    row.disabled = True
    _end_sessions(session, row)
    session.commit()


def rotate(session: Session, model: type[Device] | type[User], name: str) -> str:
    """A new token for `name` (the old one stops working; re-enables a revoked entry)."""
    row = _get(session, model, name)
    token = new_token()
    row.token_hash = token_hash(token)
    row.disabled = False
    _end_sessions(session, row)
    session.commit()
    return token


def _end_sessions(session: Session, row: Device | User) -> None:
    """A revoked user or one with a new token is logged out of the dashboard everywhere."""
    if isinstance(row, User):
        session.execute(delete(UserSession).where(UserSession.user_id == row.id))


def _get(session: Session, model: type[Device] | type[User], name: str) -> Device | User:
    row = session.scalar(select(model).where(model.name == name))
    if row is None:
        raise ValueError(f"no {model.__tablename__[:-1]} {name!r}")
    return row


def find_device(session: Session, token: str) -> Device | None:
    return _find(session, Device, token)


def find_user(session: Session, token: str) -> User | None:
    return _find(session, User, token)


def _find(session: Session, model: type[Device] | type[User], token: str) -> Device | User | None:
    """The enabled row whose token this is. The lookup is by sha256 (an index cannot compare in constant
    time, but timing could at most reveal a prefix of a hash, not of a token); the final comparison is
    constant-time so nothing about the stored hash depends on how far a guess matched."""
    wanted = token_hash(token)
    row = session.scalar(select(model).where(model.token_hash == wanted))
    if row is None or not hmac.compare_digest(row.token_hash, wanted) or row.disabled:
        return None
    return row
