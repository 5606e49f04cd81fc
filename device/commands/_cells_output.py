"""How `classify` prints a cell ensemble's field: the field line and call, the differential (counts per
type, blasts, blast % with its 95% interval, the call text) and each cell (box, state, label, p_blast)."""

from __future__ import annotations

from typing import Any

from common.wording import UNCERTAIN
from device.cells.count import Differential
from device.models.ensemble import Ensemble
from device.screening.stages import COUNTED, REFUSED, FieldCells


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def call_text(result: FieldCells) -> str:
    """The field's call as the station stores it (the record label rule)."""
    if result.state == REFUSED:
        return f"NOT SCREENED ({result.reason})"
    if result.state != COUNTED:
        return "NO WHITE CELLS"
    if result.abstained:
        return f"{UNCERTAIN} ({result.reason}); most frequent read type {result.label}"
    return result.label


def differential_lines(d: Differential) -> list[str]:
    counts = ", ".join(f"{c.id} {c.n}" for c in d.counts if c.n)
    lines = [f"  differential: {counts or 'none read'}"]
    extra = []
    if d.unnamed:
        extra.append(f"type not named {d.unnamed}")
    if d.unclassified:
        extra.append(f"unclassified {d.unclassified} (apart)")
    others = [f"{c.id} {c.n}" for c in d.others if c.n]
    if others:
        extra.append("not counted: " + ", ".join(others))
    if extra:
        lines.append("  " + "; ".join(extra))
    lines.append(
        f"  blasts {d.blasts}/{d.counted} = {_pct(d.blast_fraction)} "
        f"(95% CI {_pct(d.ci_low)}-{_pct(d.ci_high)}): {d.call_text}"
    )
    return lines


def cells_lines(path: str, result: FieldCells) -> list[str]:
    p = result.prepared
    scale = f"{p.um_per_px:.4g} µm/px ({p.scale_source})" if p.um_per_px else f"scale {p.scale_source}"
    if result.state == REFUSED:
        return [f"{path}: {call_text(result)}  | {scale}"]
    check = f"; {p.scale_check.message}" if p.scale_check.ran else ""
    lines = [f"{path}: {result.field_line}  | call: {call_text(result)}  | {scale}{check}"]
    if result.differential is not None:
        lines += differential_lines(result.differential)
    sr = result.second
    if sr is not None:
        said = f"{sr.display or sr.label} ({sr.confidence:.2f})" if sr.label else "no reading"
        lines.append(
            f"  second reading ({', '.join(sr.models)}): {sr.state} {said}"
            + ("; it called the field" if sr.decided else "")
            + (f" ({sr.reason})" if sr.reason else "")
        )
    for r in result.records:
        label = r.label or "-"
        lines.append(
            f"  cell {r.index} [{', '.join(str(v) for v in r.box)}] {r.kind} {r.state} {label} "
            f"p_blast {r.p_blast:.3f}" + (f" ({r.reason})" if r.reason else "")
        )
    return lines


def cells_json(result: FieldCells, ensemble: Ensemble) -> dict[str, Any]:
    return {
        "kind": "cells",
        "models": ensemble.names,
        "state": result.state,
        "label": result.label,
        "abstained": result.abstained,
        "reason": result.reason,
        "confidence": round(result.confidence, 6),
        "call": call_text(result),
        "field": result.to_dict(),
        "cells": [r.to_dict() for r in result.records],
    }
