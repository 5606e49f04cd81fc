"""What the app factory sets up and every blueprint reaches: the app's shared objects (`hub_ext`:
engine, session factory, settings, limiter) and the request's database session (`session`). Blueprints
import this, never `hub.app`, so the factory can import them."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, g


def hub_ext(app: Flask | None = None) -> dict[str, Any]:
    return (app or current_app).extensions["hub"]


def session():  # noqa: ANN201
    """The request's database session (closed at the end of the request)."""
    if "db" not in g:
        g.db = hub_ext()["sessions"]()
    return g.db
