"""Gather what a slide report shows from the store: the sample, its summary (frozen when finished),
representative fields, the reviews, and the models with the key that signed them; for a slide counted
cell by cell, the differential, the call, who verified it and the blast and unclassified cells."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from common.wording import DISCLAIMER
from device.cells.record import CellRecord
from device.localtime import local_text
from device.slides.cells import counts_as_white
from device.slides.summary import is_malignant
from device.slides.thumbs import cell_thumbnail
from device.store.store import Store, records_json

#: Representative images on one page: enough to show each label seen, small enough to stay on A4/Letter.
MAX_IMAGES = 6
#: Blast and unclassified cells shown on the report: one printed row (the rest are counted, "... and N more").
MAX_CELL_IMAGES = 10
SIGNATURE_FILE = "signature.json"
#: What a cell left unclassified is called under its thumbnail (a msgid of the report page).
UNCLASSIFIED_CAPTION = "unclassified"


@dataclass
class LabelRow:
    label: str
    display: str
    count: int
    fraction: float
    malignant: bool


@dataclass
class ReportImage:
    sha256: str
    path: Path | None  # None: the image is not on this station (removed after syncing)
    caption: str
    record_id: str
    cell_index: int | None = None  # a cell's thumbnail (cut from the record's frame) rather than the frame
    unclassified: bool = False  # a cell left unclassified: its caption names it UNCLASSIFIED_CAPTION

    def caption_text(self, gettext: Callable[..., str] = lambda m: m) -> str:
        """The caption in the reader's language (`gettext` of the report page's msgids)."""
        if not self.unclassified:
            return self.caption
        return self.caption.replace(UNCLASSIFIED_CAPTION, gettext(UNCLASSIFIED_CAPTION))


@dataclass
class ReviewLine:
    when: str  # local time with the zone
    reviewer: str
    field: str  # "#seq"
    model_label: str
    verdict: str  # "agreed" | "→ <label>"
    comment: str
    at: str = ""  # the review's UTC time (ISO): the page formats it in the reader's language


@dataclass
class ModelLine:
    name: str
    sha256: str
    key_id: str  # the signing key's id, or why there is none
    signed_at: str


#: The headings of the differential's rows that are not a cell type (the report page's msgids).
ROW_TITLES = {
    "unnamed": "White cell, type not named",
    "unclassified": "Unclassified (counted apart)",
    "excluded": "Excluded (not a white cell)",
}
NOT_WHITE_NOTE = "not a white cell: listed, not counted"


@dataclass
class CellRow:
    display: str  # the type's name; for a row that is not a type, its English heading (ROW_TITLES)
    n: int
    share: float | None  # of the counted white cells; None for the rows counted apart
    blast: bool
    kind: str = "type"  # "type" | "other" (a type that is not a white cell) | a key of ROW_TITLES

    def title(self, gettext: Callable[..., str] = lambda m: m) -> str:
        """The row's name in the reader's language (`gettext` of the report page's msgids)."""
        if self.kind == "other":
            return f"{self.display} ({gettext(NOT_WHITE_NOTE)})"
        return gettext(self.display) if self.kind in ROW_TITLES else self.display


@dataclass
class CellsReport:
    """A slide counted cell by cell: `summary` is `device.slides.cells.summarise_cells`'s dict (the
    pages word its figures, call, rule and who verified it from it in the reader's language)."""

    summary: dict[str, Any]
    rows: list[CellRow]
    images: list[ReportImage] = field(default_factory=list)  # blast and unclassified cells
    more_images: int = 0


@dataclass
class SlideReport:
    """One slide's report. `images` are whole fields; any picture with a caption (a cell crop) fits the
    same `ReportImage` slot, and the label rows take any per-label count."""

    station: str
    profile: str
    slide_id: str
    sample_id: str
    status: str
    created_by: str
    notes: str
    started: str
    finished: str
    generated: str
    zone: str
    fields: int
    confident_fields: int
    uncertain_fields: int
    reviewed_fields: int
    malignant_fields: int
    labels: list[LabelRow]
    call: str
    call_text: str
    rule: str
    images: list[ReportImage] = field(default_factory=list)
    reviews: list[ReviewLine] = field(default_factory=list)
    models: list[ModelLine] = field(default_factory=list)
    disclaimer: str = DISCLAIMER
    top_malignant_label: str | None = None  # the suspicious call's most frequent malignant label
    cells: CellsReport | None = None  # a slide counted cell by cell
    #: The UTC times (ISO) behind `started`, `finished` and `generated`: the page formats them with
    #: Babel in the reader's language; `started` & co. are the English text for the PDF without one.
    started_at: str = ""
    finished_at: str = ""
    generated_at: str = ""


class ReportError(LookupError):
    """No such sample."""


def _pct(x: float) -> str:
    return "≥ 99.9%" if x >= 0.999 else f"{100 * x:.1f}%"


def signature_of(bundle_dir: str | Path) -> tuple[str, str]:
    """(key id, signed at) from a bundle's signature.json (verified when the daemon loaded it)."""
    path = Path(bundle_dir) / SIGNATURE_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return str(doc["key_id"]), str(doc.get("signed_at") or "")
    except FileNotFoundError:
        return "unsigned", ""
    except (OSError, ValueError, KeyError, TypeError):
        return "signature file unreadable", ""


def model_lines(records: Iterable[Mapping[str, Any]], in_service: list[dict]) -> list[ModelLine]:
    """Each model (name, sha256) the sample's fields were classified with, in first-seen order, with the
    key that signed the bundle when that bundle is in service here."""
    by_sha = {b.get("sha256"): b for b in in_service if b.get("sha256")}
    seen: dict[tuple[str, str], ModelLine] = {}
    for r in records:
        for m in r.get("models") or []:
            key = (str(m.get("name") or "?"), str(m.get("sha256") or ""))
            if key in seen:
                continue
            bundle = by_sha.get(key[1])
            if bundle is not None and bundle.get("path"):
                kid, at = signature_of(bundle["path"])
            else:
                kid, at = "bundle not in service on this station", ""
            seen[key] = ModelLine(key[0], key[1], kid, at)
    return list(seen.values())


def pick_images(
    fields: list[dict], reviewed: Mapping[str, str], image_path, limit: int = MAX_IMAGES
) -> list[ReportImage]:
    """The most confident field of each label (most frequent label first), then uncertain fields, then
    the rest; only fields whose image was stored."""
    with_image = [f for f in fields if f.get("image_sha256")]

    def label_of(f: dict) -> str:
        return reviewed.get(f["id"]) or f["label"]

    confident = [f for f in with_image if f["id"] in reviewed or not f.get("abstained")]
    counts: dict[str, int] = {}
    for f in confident:
        counts[label_of(f)] = counts.get(label_of(f), 0) + 1
    chosen: list[dict] = []
    for label in sorted(counts, key=lambda lb: (-counts[lb], lb)):
        best = max((f for f in confident if label_of(f) == label), key=lambda f: f.get("confidence") or 0)
        chosen.append(best)
    rest = [f for f in with_image if f not in chosen]
    rest.sort(key=lambda f: (not f.get("abstained"), -(f.get("confidence") or 0), f["seq"]))
    chosen += rest[: max(0, limit - len(chosen))]
    out = []
    for f in chosen[:limit]:
        if f["id"] in reviewed:
            what = f"{reviewed[f['id']]} (reviewed; model: {f['label']})"
        elif f.get("abstained"):
            what = f"uncertain (top {f['label']})"
        else:
            what = f"{f['label']} {_pct(f.get('confidence') or 0)}"
        path = image_path(f["image_sha256"])
        out.append(
            ReportImage(f["image_sha256"], path if path.is_file() else None, f"#{f['seq']} · {what}", f["id"])
        )
    return out


def _profile_text(fields: list[dict]) -> str:
    seen: dict[str, None] = {}
    for f in fields:
        name = f.get("profile")
        um = f.get("um_per_px")
        text = f"{name} ({um:.4g} µm/px)" if name and um else (name or (f"{um:.4g} µm/px" if um else "none"))
        seen.setdefault(text, None)
    return "; ".join(seen) or "none"


def build_slide_report(
    store,
    sample_id: str,
    *,
    zone: ZoneInfo,
    in_service: list[dict] | None = None,
    station: str = "",
    max_images: int = MAX_IMAGES,
) -> SlideReport:
    """Everything the report prints, from the store; `in_service` = `services.ensemble_info()`."""
    sample = store.get_sample(sample_id)
    if sample is None:
        raise ReportError(f"no sample {sample_id}")
    summary = _summary(store, sample, sample_id)
    rows = store.conn.execute(
        "SELECT * FROM results WHERE sample_id = ? ORDER BY seq", (sample_id,)
    ).fetchall()
    records = records_json(store.conn, rows)
    if summary.get("kind") == "cells":
        return _cells_report(store, sample, summary, records, zone, in_service, station, max_images)
    fields = [r for r in records if r["kind"] == "classification"]
    by_id = {f["id"]: f for f in fields}
    review_rows = [r for r in records if r["kind"] == "review" and r["review_of"] in by_id]
    latest_review = {r["review_of"]: r["label"] for r in review_rows}  # seq order: the newest wins

    in_service = in_service or []
    labels = _field_label_rows(store, summary, in_service)
    reviews = _review_lines(review_rows, by_id, zone)
    return SlideReport(
        **_sample_header(store, sample, fields, zone, station),
        fields=int(summary.get("fields", 0)),
        confident_fields=int(summary.get("confident_fields", 0)),
        uncertain_fields=int(summary.get("uncertain_fields", 0)),
        reviewed_fields=int(summary.get("reviewed_fields", 0)),
        malignant_fields=int(summary.get("malignant_fields", 0)),
        labels=labels,
        call=summary.get("call", "insufficient"),
        call_text=summary.get("call_text", ""),
        top_malignant_label=summary.get("top_malignant_label"),
        rule=summary.get("rule", ""),
        images=pick_images(fields, latest_review, store.image_path, max_images),
        reviews=reviews,
        models=model_lines(fields, in_service),
        disclaimer=summary.get("disclaimer") or DISCLAIMER,
    )


def _summary(store, sample: Mapping[str, Any], sample_id: str) -> dict[str, Any]:
    """A finished field slide's stored summary; otherwise (and for every cell slide) a fresh one."""
    summary = (sample["status"] == "finished" and sample.get("summary")) or store.sample_summary(sample_id)
    if summary.get("kind") == "cells":
        summary = store.sample_summary(sample_id)  # every cell review counts, whenever it was made
    return summary


def _field_label_rows(store, summary: Mapping[str, Any], in_service: list[dict]) -> list[LabelRow]:
    """One row per field label, most fields first; names and malignant flags from the models in service,
    falling back to the store's."""
    display = {lb["id"]: lb.get("display") or lb["id"] for b in in_service for lb in b.get("labels") or []}
    flags: dict[str, bool | None] = {
        lb["id"]: lb.get("malignant") for b in in_service for lb in b.get("labels") or []
    }
    flags = {**store.malignant_labels(), **{k: v for k, v in flags.items() if v is not None}}
    counts = summary.get("label_counts") or {}
    fractions = summary.get("label_fractions") or {}
    return [
        LabelRow(lb, display.get(lb, lb), int(counts.get(lb, 0)), float(fractions.get(lb, 0.0)),
                 is_malignant(lb, flags))
        for lb in sorted(counts, key=lambda k: (-counts[k], k))
    ]  # fmt: skip


def _review_lines(review_rows: list[dict], by_id: dict[Any, dict], zone: ZoneInfo) -> list[ReviewLine]:
    """One line per field review, in the order they were made."""
    reviews = []
    for r in review_rows:
        orig = by_id[r["review_of"]]
        verdict = "agreed" if r["label"] == orig["label"] else f"→ {r['label']}"
        comment = r.get("comment") or ""
        reviews.append(
            ReviewLine(
                local_text(r["captured_at"], zone), r.get("reviewer") or "?", f"#{orig['seq']}",
                orig["label"], verdict, "" if comment == "agree" else comment, r["captured_at"],
            )
        )  # fmt: skip
    return reviews


def _cell_rows(summary: Mapping[str, Any]) -> list[CellRow]:
    """Blasts first, then the other types, the unnamed ones, and what is counted apart."""
    d = summary["differential"]
    n = summary["counted"]

    def share(k: int) -> float | None:
        return k / n if n else None

    rows = [CellRow(tc["display"], tc["n"], share(tc["n"]), True) for tc in d["counts"] if tc["blast"]]
    rows += [CellRow(tc["display"], tc["n"], share(tc["n"]), False) for tc in d["counts"] if not tc["blast"]]
    if d["unnamed"]:
        rows.append(CellRow(ROW_TITLES["unnamed"], d["unnamed"], share(d["unnamed"]), False, "unnamed"))
    rows.append(CellRow(ROW_TITLES["unclassified"], summary["unclassified"], None, False, "unclassified"))
    rows += [CellRow(tc["display"], tc["n"], None, False, "other") for tc in d["others"] if tc["n"]]
    if summary["excluded"]:
        rows.append(CellRow(ROW_TITLES["excluded"], summary["excluded"], None, False, "excluded"))
    return rows


def _cell_images(
    store, records: list[dict], summary: Mapping[str, Any], limit: int
) -> tuple[list[ReportImage], int]:
    """The blast cells, then the unclassified ones (thumbnails cut from their frames)."""
    blast_ids = {lb["id"] for lb in summary["labels"] if lb["blast"]}
    display = {lb["id"]: lb["display"] for lb in summary["labels"]}
    known = set(display)
    picked: list[tuple[int, dict, CellRecord, str]] = []
    for r in records:
        for d in r["cells"]:
            c = CellRecord.from_dict(d)
            if not counts_as_white(c):
                continue
            lab = c.counted_as()
            if lab in blast_ids:
                picked.append((0, r, c, display[lab]))
            elif lab is None or (lab not in known and lab != "unnamed_white"):
                picked.append((1, r, c, UNCLASSIFIED_CAPTION))
    picked.sort(key=lambda t: t[0])  # stable: capture order within each group
    out = []
    for _, r, c, what in picked[:limit]:
        sha = r.get("image_sha256")
        path = None
        if sha:
            boxes = {int(x["index"]): tuple(x["box"]) for x in r["cells"]}
            path = cell_thumbnail(
                store.image_path(sha), store.data_dir / "thumbs", sha, c.box, siblings=boxes
            )
        mark = " ✓" if c.reviewed_label else ""
        caption = f"#{r['seq']}.{c.index} {what}{mark}"
        out.append(ReportImage(sha or "", path, caption, r["id"], c.index, what == UNCLASSIFIED_CAPTION))
    return out, max(0, len(picked) - limit)


def _cell_reviews(records: list[dict], zone: ZoneInfo) -> list[ReviewLine]:
    lines = []
    for r in records:
        for d in r["cells"]:
            c = CellRecord.from_dict(d)
            if c.reviewed_label is None:
                continue
            said = c.label or c.state
            verdict = "agreed" if c.reviewed_label == c.label else f"→ {c.reviewed_label}"
            lines.append(
                ReviewLine(
                    local_text(c.reviewed_at, zone), c.reviewer or "?", f"#{r['seq']} cell {c.index}", said,
                    verdict, "", c.reviewed_at or "",
                )
            )  # fmt: skip
    lines.sort(key=lambda rv: rv.at)
    return lines


def _cells_report(
    store,
    sample: dict,
    summary: dict,
    records: list[dict],
    zone: ZoneInfo,
    in_service: list[dict] | None,
    station: str,
    max_images: int,
) -> SlideReport:
    fields = [r for r in records if r["kind"] == "cells"]
    blast_ids = {lb["id"] for lb in summary["labels"] if lb["blast"]}

    def has_blast(r: dict) -> bool:
        cells = (CellRecord.from_dict(d) for d in r["cells"])
        return any(counts_as_white(c) and c.counted_as() in blast_ids for c in cells)

    images, more = _cell_images(store, fields, summary, MAX_CELL_IMAGES)
    return SlideReport(
        **_sample_header(store, sample, fields, zone, station),
        fields=len(fields),
        confident_fields=sum(1 for f in fields if not f.get("abstained")),
        uncertain_fields=sum(1 for f in fields if f.get("abstained")),
        reviewed_fields=sum(1 for f in fields if any(d.get("reviewed_label") for d in f["cells"])),
        malignant_fields=sum(1 for f in fields if has_blast(f)),
        labels=[],
        call=summary["call"],
        call_text=summary["call_text"],
        rule=f"{summary['rule']} {summary['verify_rule']}",
        images=pick_images(fields, {}, store.image_path, min(max_images, 3)),
        reviews=_cell_reviews(fields, zone),
        models=model_lines(fields, in_service or []),
        disclaimer=summary.get("disclaimer") or DISCLAIMER,
        cells=CellsReport(summary, _cell_rows(summary), images, more),
    )


def _sample_header(
    store: Store, sample: dict[str, Any], fields: list[dict[str, Any]], zone: ZoneInfo, station: str | None
) -> dict[str, Any]:
    """What every slide report says of its sample: station, slide, who, and when (local with the zone,
    and the UTC times the web page formats in the reader's language)."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {
        "station": station or store.device_id,
        "profile": _profile_text(fields),
        "slide_id": sample["slide_id"],
        "sample_id": sample["id"],
        "status": sample["status"],
        "created_by": sample.get("created_by") or "?",
        "notes": sample.get("notes") or "",
        "started": local_text(sample["started_at"], zone),
        "finished": local_text(sample.get("finished_at"), zone),
        "generated": local_text(now, zone),
        "zone": zone.key,
        "started_at": sample["started_at"],
        "finished_at": sample.get("finished_at") or "",
        "generated_at": now,
    }
