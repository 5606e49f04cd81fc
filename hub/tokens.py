"""Device and user tokens: random, shown once, stored only as sha256 (they are 256-bit random, so a
fast hash is enough; a slow password hash would only cost time on every request)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.models import Device, User


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_device(session: Session, name: str) -> str:
    """Register a device; returns its token (the only time it is visible)."""
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
    session.commit()


def rotate(session: Session, model: type[Device] | type[User], name: str) -> str:
    """A new token for `name` (the old one stops working; re-enables a revoked entry)."""
    row = _get(session, model, name)
    token = new_token()
    row.token_hash = token_hash(token)
    row.disabled = False
    session.commit()
    return token


def _get(session: Session, model: type[Device] | type[User], name: str) -> Device | User:
    row = session.scalar(select(model).where(model.name == name))
    if row is None:
        raise ValueError(f"no {model.__tablename__[:-1]} {name!r}")
    return row


def find_device(session: Session, token: str) -> Device | None:
    dev = session.scalar(select(Device).where(Device.token_hash == token_hash(token)))
    return dev if dev is not None and not dev.disabled else None


def find_user(session: Session, token: str) -> User | None:
    user = session.scalar(select(User).where(User.token_hash == token_hash(token)))
    return user if user is not None and not user.disabled else None
