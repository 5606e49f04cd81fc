"""Read helpers the pages need beyond device.store.Store's API (plain SQL on the store's connection),
and the one parser of history filters shared by the page, the JSON API and the exports.

`list_results` is the history query. Without a date filter it walks the primary key (newest seq
first, keyset cursor = seq). With a date filter it walks the `results_captured` index instead
(captured_at DESC, seq DESC; cursor = "captured_at|seq"): ordering a date range by seq would make
SQLite sort the whole range (5 s for a year of 1M records), walking the index costs nothing."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta

from device.store.store import record_json, records_json

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UUID = re.compile(r"^[0-9a-fA-F-]{8,64}$")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T[\d:.]+Z$")


class BadFilter(ValueError):
    """A filter value that cannot be understood; the message names it."""


@dataclass
class Filters:
    sample: str | None = None
    label: str | None = None
    since: str | None = None  # UTC ISO, inclusive
    until: str | None = None  # UTC ISO, exclusive
    abstained: bool | None = None
    reviewed: bool | None = None
    source: str | None = None
    before: str | None = None  # keyset cursor: "seq", or "captured_at|seq" with a date filter
    limit: int = 50

    @property
    def by_time(self) -> bool:
        return bool(self.since or self.until)

    def query_args(self) -> dict[str, str]:
        """The filters as URL query arguments (for "next page" and export links)."""
        out: dict[str, str] = {}
        for key in ("sample", "label", "source"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.since:
            out["from"] = self.since[:10]
        if self.until:
            out["to"] = (date.fromisoformat(self.until[:10]) - timedelta(days=1)).isoformat()
        if self.abstained is not None:
            out["uncertain"] = "yes" if self.abstained else "no"
        if self.reviewed is not None:
            out["reviewed"] = "yes" if self.reviewed else "no"
        return out


def _tristate(name: str, value: str | None) -> bool | None:
    if value in (None, "", "any"):
        return None
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise BadFilter(f"{name}: expected yes, no or any, not {value!r}")


def _day(name: str, value: str) -> date:
    if not _DATE.match(value):
        raise BadFilter(f"{name}: expected a date YYYY-MM-DD, not {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise BadFilter(f"{name}: {value!r} is not a date") from exc


def resolve_sample(conn: sqlite3.Connection, value: str) -> str:
    """A sample id, or a slide id the technician typed (its newest sample)."""
    if _UUID.match(value) and conn.execute("SELECT 1 FROM samples WHERE id = ?", (value,)).fetchone():
        return value
    row = conn.execute(
        "SELECT id FROM samples WHERE slide_id = ? ORDER BY started_at DESC LIMIT 1", (value,)
    ).fetchone()
    if row is None:
        raise BadFilter(f"sample: no sample with the id or slide id {value!r}")
    return row[0]


def parse_filters(
    args: Mapping[str, str],
    *,
    conn: sqlite3.Connection | None = None,
    default_limit: int = 50,
    max_limit: int = 1000,
) -> Filters:
    """Query arguments → Filters. With `conn`, `sample` may also be a slide id."""
    f = Filters(limit=default_limit)
    sample = (args.get("sample") or "").strip()
    if sample:
        f.sample = resolve_sample(conn, sample) if conn is not None else sample
    f.label = (args.get("label") or "").strip() or None
    source = (args.get("source") or "").strip() or None
    if source and source not in ("camera", "upload"):
        raise BadFilter(f"source: expected camera or upload, not {source!r}")
    f.source = source
    if args.get("from"):
        f.since = _day("from", args["from"]).isoformat() + "T00:00:00.000Z"
    if args.get("to"):
        f.until = (_day("to", args["to"]) + timedelta(days=1)).isoformat() + "T00:00:00.000Z"
    if f.since and f.until and f.since >= f.until:
        raise BadFilter("from: the start date is after the end date")
    f.abstained = _tristate("uncertain", args.get("uncertain"))
    f.reviewed = _tristate("reviewed", args.get("reviewed"))
    if args.get("before"):
        f.before = args["before"]
        _cursor(f)  # validate now: a bad cursor is the caller's mistake (400), not ours
    if args.get("limit"):
        try:
            f.limit = max(1, min(int(args["limit"]), max_limit))
        except ValueError as exc:
            raise BadFilter(f"limit: expected a number, not {args['limit']!r}") from exc
    return f


def reviews_for(conn: sqlite3.Connection, ids: list[str]) -> dict[str, dict]:
    """The newest review record of each of `ids` that has one."""
    if not ids:
        return {}
    marks = ",".join("?" for _ in ids)
    rows = conn.execute(f"SELECT * FROM results WHERE review_of IN ({marks}) ORDER BY seq", ids).fetchall()
    return {r["review_of"]: r for r in records_json(conn, rows)}


def _cursor(f: Filters) -> tuple[str | None, int]:
    """(captured_at, seq) of the cursor in `f.before`."""
    raw = f.before or ""
    at, _, seq = raw.rpartition("|") if f.by_time else ("", "", raw)
    if f.by_time and not _ISO.match(at):
        raise BadFilter(f"before: expected the `next` cursor of the previous page, not {raw!r}")
    try:
        return (at or None), int(seq)
    except ValueError as exc:
        raise BadFilter(f"before: expected the `next` cursor of the previous page, not {raw!r}") from exc


#: What the history lists and exports: the station's results (field classifications and cell records);
#: reviews come with the record they review.
RESULT_KINDS = ("classification", "cells")


def list_results(
    conn: sqlite3.Connection,
    f: Filters,
    *,
    kind: str | tuple[str, ...] | None = RESULT_KINDS,
    limit: int | None = None,
    with_cells: bool = True,
) -> tuple[list[dict], str | None]:
    """One page of records matching `f`, newest first, and the cursor of the next page (or None).
    `with_cells=False`: the records' `cells` stay empty (pages that list records do not show them)."""
    where, args = [], []
    for col, val in (("sample_id", f.sample), ("label", f.label), ("source", f.source)):
        if val is not None:
            where.append(f"{col} = ?")
            args.append(val)
    if isinstance(kind, str):
        kind = (kind,)
    if kind:
        where.append(f"kind IN ({','.join('?' for _ in kind)})")
        args.extend(kind)
    if f.since:
        where.append("captured_at >= ?")
        args.append(f.since)
    if f.until:
        where.append("captured_at < ?")
        args.append(f.until)
    if f.abstained is not None:
        where.append("abstained = ?")
        args.append(int(f.abstained))
    if f.reviewed is not None:
        exists = "EXISTS (SELECT 1 FROM results r2 WHERE r2.review_of = results.id)"
        where.append(exists if f.reviewed else f"NOT {exists}")
    if f.before:
        at, seq = _cursor(f)
        if f.by_time:
            where.append("captured_at <= ? AND (captured_at < ? OR seq < ?)")
            args += [at, at, seq]
        else:
            where.append("seq < ?")
            args.append(seq)
    limit = limit or f.limit
    sql = "SELECT * FROM results"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY captured_at DESC, seq DESC" if f.by_time else " ORDER BY seq DESC"
    sql += " LIMIT ?"
    found = conn.execute(sql, [*args, limit])
    rows = records_json(conn, found) if with_cells else [record_json(r) for r in found]
    nxt = None
    if len(rows) == limit:
        last = rows[-1]
        nxt = f"{last['captured_at']}|{last['seq']}" if f.by_time else str(last["seq"])
    return rows, nxt


def all_reviews_for(conn: sqlite3.Connection, ids: list[str]) -> dict[str, list[dict]]:
    """Every review record of each of `ids`, oldest first."""
    if not ids:
        return {}
    marks = ",".join("?" for _ in ids)
    out: dict[str, list[dict]] = {}
    rows = conn.execute(f"SELECT * FROM results WHERE review_of IN ({marks}) ORDER BY seq", ids)
    for r in records_json(conn, rows):
        out.setdefault(r["review_of"], []).append(r)
    return out


def iter_record_groups(
    conn: sqlite3.Connection, filters: Filters, *, page: int = 500
) -> Iterator[tuple[dict, list[dict]]]:
    """(classification record, its reviews oldest first) for every record matching `filters`, newest
    first, fetched page by page (exports of any size). The filters choose the classifications; their
    reviews always come with them (a "reviewed" export carries who reviewed what)."""
    f = replace(filters, before=None)
    while True:
        rows, f.before = list_results(conn, f, limit=page)
        reviews = all_reviews_for(conn, [r["id"] for r in rows])
        for r in rows:
            yield r, reviews.get(r["id"], [])
        if f.before is None:
            return


def iter_records(conn: sqlite3.Connection, filters: Filters, *, page: int = 500) -> Iterator[dict]:
    """The records of `iter_record_groups`, each classification followed by its reviews."""
    for rec, reviews in iter_record_groups(conn, filters, page=page):
        yield rec
        yield from reviews


def sample_slides(conn: sqlite3.Connection, ids: list[str]) -> dict[str, str]:
    """sample id → slide id, for labelling records."""
    ids = [i for i in set(ids) if i]
    if not ids:
        return {}
    marks = ",".join("?" for _ in ids)
    return {r[0]: r[1] for r in conn.execute(f"SELECT id, slide_id FROM samples WHERE id IN ({marks})", ids)}
