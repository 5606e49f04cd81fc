"""HTTP error answers in the reader's language: a human name for each status and, when the view gave
no message of its own, a sentence saying what to do. Pages get `error.html`, JSON callers `{"error"}`.
A server error (500) never shows its internals: they are in the station's log."""

from __future__ import annotations

import contextlib
import sqlite3

from flask import Flask, jsonify, render_template, request
from flask_babel import gettext
from werkzeug.exceptions import HTTPException, InternalServerError

from device.store.store import DiskFullError, is_disk_full
from device.web import security


def status_name(code: int | None) -> str:
    """A status code's name for people, translated ("Not found"); werkzeug's English name otherwise."""
    names = {
        400: gettext("Request not understood"),
        401: gettext("Login required"),
        403: gettext("Not allowed"),
        404: gettext("Not found"),
        405: gettext("Not allowed here"),
        409: gettext("Conflict"),
        413: gettext("Too large"),
        415: gettext("File type not accepted"),
        422: gettext("File not usable"),
        429: gettext("Too many tries"),
        500: gettext("Station error"),
        503: gettext("Station busy"),
        507: gettext("Storage full"),
    }
    return names.get(code or 0, "")


def status_sentence(code: int | None) -> str:
    """What to do after a status, when the view said nothing more precise."""
    sentences = {
        400: gettext("The station could not use what the page sent: reload the page and try again."),
        401: gettext("Log in to open this page."),
        403: gettext("Your account may not open this page: ask an admin."),
        404: gettext("This page or item does not exist (any more): check the address, or go back."),
        405: gettext("This page cannot be used that way: go back and use the page's buttons."),
        409: gettext("This clashes with what the station already holds: reload the page and check."),
        413: gettext("What was sent is too large for this station: send less, or smaller files."),
        415: gettext("This kind of file is not accepted: use JPEG, PNG, BMP or TIFF."),
        422: gettext("The station could not use this file: check it and try again."),
        429: gettext("Too many tries in a short time: wait a minute and try again."),
        500: gettext(
            "Something went wrong on the station: try again; if it happens again, tell an admin "
            "(the details are in the station's log)."
        ),
        503: gettext("The station is busy: wait a moment and try again."),
    }
    return sentences.get(code or 0, gettext("The station could not do this: go back and try again."))


def _own_message(exc: HTTPException) -> str | None:
    """The view's own message (already in the reader's words), or None for werkzeug's default text
    and for server errors."""
    if isinstance(exc, InternalServerError) or (exc.code or 500) >= 500 and exc.code != 503:
        return None
    described = exc.description
    if not described or described == type(exc).description:
        return None
    return str(described)


def _answer(code: int, name: str, message: str):
    if security.wants_json() or request.path.startswith("/api/"):
        return jsonify({"error": message}), code
    return render_template("error.html", code=code, name=name, message=message), code


def http_error(exc: HTTPException):
    code = exc.code or 500
    if exc.response is not None:  # a view's own prepared answer (e.g. a redirect)
        return exc.response
    return _answer(code, status_name(code) or exc.name, _own_message(exc) or status_sentence(code))


def storage_full(exc: Exception):
    if not is_disk_full(exc):
        raise exc
    from flask import current_app

    with contextlib.suppress(Exception):
        current_app.extensions["smearscope"].services.store.disk_full = True
    msg = gettext("storage full: nothing was stored; free disk space (see Status) and try again")
    return _answer(507, status_name(507), msg)


def too_large(exc, limit_bytes: int, each_mb: int):
    got = request.content_length
    limits = {"total": f"{limit_bytes / 1e6:.0f}", "each": each_mb}
    msg = (
        gettext(
            "upload too large: this request is %(got)s MB; one request may carry at most %(total)s MB "
            "in all, each file at most %(each)s MB",
            got=f"{got / 1e6:.1f}",
            **limits,
        )
        if got
        else gettext(
            "upload too large: one request may carry at most %(total)s MB in all, each file at most "
            "%(each)s MB",
            **limits,
        )
    )
    return _answer(413, status_name(413), msg)


def init_app(app: Flask, limit_bytes: int, each_mb: int) -> None:
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(DiskFullError, storage_full)
    app.register_error_handler(sqlite3.OperationalError, storage_full)
    app.register_error_handler(413, lambda exc: too_large(exc, limit_bytes, each_mb))
