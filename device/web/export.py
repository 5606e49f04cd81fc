"""CSV and JSON exports of records (streamed, so a year of records does not sit in memory). The JSON
carries each record's cells; the cells CSV is a second file, one row per cell."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping

from common.csvsafe import safe_cell
from common.wording import DISCLAIMER
from device.cells.count import UNCLASSIFIED
from device.cells.record import NOT_A_CELL, CellRecord

CSV_COLUMNS = [
    "id", "seq", "captured_at", "sample_id", "slide_id", "source", "kind", "review_of", "label",
    "confidence", "abstained", "reason", "quality_ok", "focus", "models", "image_sha256", "filename",
    "reviewer", "comment", "reviewed_label", "um_per_px", "profile",
]  # fmt: skip


def _csv_line(values: list) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(values)
    return buf.getvalue()


def _row(r: dict, labels: list[str], slides: Mapping[str, str], reviewed_label: str | None) -> str:
    q = r.get("quality") or {}
    row = [
        r["id"], r["seq"], r["captured_at"], r["sample_id"], slides.get(r["sample_id"] or "", ""),
        r["source"], r["kind"], r["review_of"], r["label"], f"{r['confidence']:.4f}",
        int(r["abstained"]), r["reason"], q.get("ok"), q.get("focus"),
        ";".join(f"{m.get('name')}@{(m.get('sha256') or '')[:12]}" for m in r.get("models") or []),
        r["image_sha256"], r["filename"], r["reviewer"], r["comment"], reviewed_label,
        r.get("um_per_px"), r.get("profile"),
    ]  # fmt: skip
    row += [f"{r['probabilities'].get(lb, 0.0):.4f}" for lb in labels]
    row.append(DISCLAIMER)
    return _csv_line([safe_cell(v) if v is not None else "" for v in row])


def header(labels: list[str]) -> list[str]:
    return CSV_COLUMNS + [f"p_{lb}" for lb in labels] + ["disclaimer"]


def csv_group_rows(
    groups: Iterable[tuple[dict, list[dict]]], labels: list[str], slides: Mapping[str, str]
) -> Iterator[str]:
    """The header first (a spreadsheet opens the file as a table), then each classification with its
    latest reviewed label, followed by its review rows (reviewer, comment, reviewed label). The
    disclaimer is the last column of every row, so it survives sorting and filtering."""
    yield _csv_line(header(labels))
    for rec, reviews in groups:
        yield _row(rec, labels, slides, reviews[-1]["label"] if reviews else None)
        for rv in reviews:
            yield _row(rv, labels, slides, rv["label"])


def csv_rows(records: Iterable[dict], labels: list[str], slides: Mapping[str, str]) -> Iterator[str]:
    """Records as CSV lines (header first), one row each, in the order given."""
    return csv_group_rows(((r, []) for r in records), labels, slides)


def json_stream(records: Iterable[dict], meta: dict) -> Iterator[str]:
    """{"disclaimer": ..., ...meta, "records": [...]} written record by record."""
    head = {"disclaimer": DISCLAIMER, **meta}
    yield json.dumps(head)[:-1] + ', "records": ['
    first = True
    for r in records:
        yield ("" if first else ",\n") + json.dumps(r)
        first = False
    yield "]}\n"


CELL_COLUMNS = [
    "record_id", "seq", "captured_at", "sample_id", "slide_id", "source", "index", "x0", "y0", "x1", "y1",
    "x", "y", "kind", "state", "label", "p_blast", "reason", "reviewed_label", "reviewer", "reviewed_at",
    "counted_as", "probabilities", "models",
]  # fmt: skip


def _counted_as(c: CellRecord) -> str:
    """What the slide's differential counts the cell as (its reviewed label wins)."""
    if c.excluded:
        return NOT_A_CELL
    return c.counted_as() or UNCLASSIFIED


def csv_cell_rows(records: Iterable[dict], slides: Mapping[str, str]) -> Iterator[str]:
    """The header first, then one row per cell of each record (records without cells give none); the
    probabilities as one JSON object (the labels differ between bundles); the disclaimer last."""
    yield _csv_line([*CELL_COLUMNS, "disclaimer"])
    for r in records:
        models = ";".join(f"{m.get('name')}@{(m.get('sha256') or '')[:12]}" for m in r.get("models") or [])
        for d in r.get("cells") or []:
            c = CellRecord.from_dict(d)
            row = [
                r["id"], r["seq"], r["captured_at"], r["sample_id"], slides.get(r["sample_id"] or "", ""),
                r["source"], c.index, *c.box, f"{c.x:.1f}", f"{c.y:.1f}", c.kind, c.state, c.label,
                f"{c.p_blast:.4f}", c.reason, c.reviewed_label, c.reviewer, c.reviewed_at, _counted_as(c),
                json.dumps(d["probabilities"], sort_keys=True), models, DISCLAIMER,
            ]  # fmt: skip
            yield _csv_line([safe_cell(v) if v is not None else "" for v in row])
