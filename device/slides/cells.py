"""A slide's white-cell differential and call from the cells of its 'cells' records (a screening aid for
trained staff, not a diagnosis).

Which cells count:
- a cell counts by its reviewed label when a person gave one, else by the classifier's decision
  (`CellRecord.counted_as`), whether the sample is open or finished;
- a cell reviewed as "not a white cell" (`NOT_A_CELL`) is excluded from every count and listed apart;
- a cell the detector did not take for a white cell (platelet, other) is listed, never counted, unless
  a person gave it a label;
- unclassified cells are counted apart (`device.cells.count.differential`), never dropped.

The labels (ids, display names, which are blasts, which are white cells) come from the records: the
field differential each record stores (`quality.differential`, made with its bundle's labels), else its
cells' probabilities with their decided states and the station's label flags. Never from a list here.

Verified (`VERIFY_RULE`): every cell the classifier called a blast or left unclassified has been reviewed
by a person, and at least one cell has; "verified by" names everyone who reviewed a cell of the slide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from common.wording import DISCLAIMER
from device.cells.count import UNCLASSIFIED, UNNAMED, Differential, LabelInfo, differential
from device.cells.record import CellRecord
from device.config import CellsConfig

VERIFY_RULE = (
    "Verified when a person has reviewed every cell the classifier called a blast or left unclassified "
    "(and at least one cell); the names are everyone who reviewed a cell of the slide."
)


def record_labels(record: Mapping[str, Any], flags: Mapping[str, bool | None]) -> list[LabelInfo]:
    """The labels a 'cells' record was classified with, in its bundle's order."""
    diff = (record.get("quality") or {}).get("differential") or {}
    out: dict[str, LabelInfo] = {}
    for group, white in (("counts", True), ("others", False)):
        for tc in diff.get(group) or []:
            if not (isinstance(tc, Mapping) and isinstance(tc.get("id"), str)):
                continue
            if isinstance(tc.get("blast"), bool):
                display = str(tc.get("display") or tc["id"])
                out.setdefault(tc["id"], LabelInfo(tc["id"], display, tc["blast"], white))
    if out:
        return list(out.values())
    # no stored differential: the cells' probabilities name the labels; a decided cell says whether its
    # label is a blast; the station's flags say it for the rest; a label nobody declares is left out
    order: dict[str, None] = {}
    blast_of: dict[str, bool] = {}
    for c in record.get("cells") or []:
        order.update(dict.fromkeys(c.get("probabilities") or {}))
        if c.get("label") and c.get("state") in ("blast", "not_blast"):
            order[c["label"]] = None
            blast_of.setdefault(c["label"], c["state"] == "blast")
    for lid in order:
        blast = blast_of.get(lid, flags.get(lid))
        if isinstance(blast, bool) and lid not in (UNCLASSIFIED, UNNAMED):
            out[lid] = LabelInfo(lid, lid, blast, True)
    return list(out.values())


def record_label_ids(record: Mapping[str, Any], flags: Mapping[str, bool | None]) -> list[str]:
    """The labels a cell of this record may be reviewed as (besides NOT_A_CELL)."""
    return [lb.id for lb in record_labels(record, flags)]


def merged_labels(records: Iterable[Mapping[str, Any]], flags: Mapping[str, bool | None]) -> list[LabelInfo]:
    """The labels of all the records, first seen first (a model update mid-slide adds its new labels)."""
    out: dict[str, LabelInfo] = {}
    for r in records:
        for lb in record_labels(r, flags):
            out.setdefault(lb.id, lb)
    return list(out.values())


def counts_as_white(cell: CellRecord) -> bool:
    """Whether the cell enters the differential at all (see the module's rule)."""
    if cell.excluded:
        return False
    return cell.kind == "white" or cell.reviewed_label is not None


def slide_differential(
    cells: Sequence[CellRecord], labels: Sequence[LabelInfo], counting: CellsConfig
) -> Differential:
    known = {lb.id for lb in labels}
    to_count: list[str | None] = []
    for c in cells:
        if not counts_as_white(c):
            continue
        lab = c.counted_as()
        # a label no record declares cannot be placed on either side: unclassified, never dropped
        to_count.append(lab if lab in known or lab == UNNAMED else None)
    return differential(
        to_count,
        [asdict(lb) for lb in labels],
        target=counting.target,
        threshold=counting.threshold,
        max_unclassified=counting.max_unclassified,
    )


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 2)


def summarise_cells(
    records: Sequence[Mapping[str, Any]],
    flags: Mapping[str, bool | None],
    counting: CellsConfig,
    cells: Sequence[CellRecord] | None = None,
) -> dict[str, Any]:
    """The slide summary of a sample's 'cells' records (record JSON). `cells`: all their cells, when
    the caller has them as `CellRecord`s already; else read from the records' `cells`."""
    labels = merged_labels(records, flags)
    if cells is None:
        cells = [CellRecord.from_dict(c) for r in records for c in r.get("cells") or []]
    d = slide_differential(cells, labels, counting)
    counted = [c for c in cells if counts_as_white(c)]
    to_review = [c for c in counted if c.state != "not_blast" and c.reviewed_label is None]
    reviewed = [c for c in cells if c.reviewed_label is not None]
    verified = not to_review and bool(reviewed)
    goal = d.target if d.counted < d.target else d.target * (d.counted // d.target + 1)
    return {
        "kind": "cells",
        "fields": len(records),
        "cells": len(cells),
        "counted": d.counted,
        "target": d.target,
        "goal": goal,
        "blasts": d.blasts,
        "blast_pct": _pct(d.blast_fraction),
        "ci_low_pct": _pct(d.ci_low),
        "ci_high_pct": _pct(d.ci_high),
        "threshold_pct": counting.threshold_pct,
        "max_unclassified_pct": counting.max_unclassified_pct,
        "unclassified": d.unclassified,
        "unnamed": d.unnamed,
        "excluded": sum(1 for c in cells if c.excluded),
        "not_white": sum(1 for c in cells if not c.excluded and not counts_as_white(c)),
        "reviewed_cells": len(reviewed),
        "to_review": len(to_review),
        "verified": verified,
        "verified_by": sorted({c.reviewer for c in reviewed if c.reviewer}) if verified else [],
        "differential": d.to_dict(),
        "labels": [asdict(lb) for lb in labels],
        "call": d.call,
        "call_text": d.call_text,
        "rule": d.rule,
        "verify_rule": VERIFY_RULE,
        "disclaimer": DISCLAIMER,
    }
