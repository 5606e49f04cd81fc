"""The station's field rule on labelled fields: its thresholds chosen on validation fields, and each
field's call as the station makes it.

A field's call is the station's own (`device.screening.result.field_call` with the field rule of
`device.cells.field`), from the cells' decisions (`device.cells.decide`) and their pooled evidence.

Thresholds (`choose_thresholds`, validation fields with at least `min_cells` pooled cells): A = the
highest mean blast probability of a field without blasts plus `margin`, B = the lowest mean of a field
with blasts minus `margin`; `field_clear_threshold` = min(A, B), `field_blast_threshold` = max(A, B).
So no validation field is on the wrong side, a test field must stray more than `margin` beyond every
validation field of its kind to be called wrong, and the fields between (where the two kinds overlap,
or the gap no validation field reached) abstain.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from device.cells.decide import BLAST, CellDecision
from device.cells.field import FieldEvidence, pool, pooled_verdict
from device.cells.record import CellRecord
from device.models.bundle import CellSpec, Label
from device.screening.result import field_call

BLAST_CALL, CLEAR_CALL, UNCERTAIN, NO_CELLS = "blast", "no_blast", "uncertain", "no_cells"
RIGHT, WRONG = "right", "confidently_wrong"


@dataclass(frozen=True)
class LabelledField:
    """One field's cells: their probabilities (label id -> p), the content check's reason per cell
    (None: familiar) and the field's truth (its folder's label id, e.g. hematogone / blast_pre)."""

    name: str
    truth: str
    probabilities: tuple[Mapping[str, float], ...]
    unfamiliar: tuple[str | None, ...]


@dataclass(frozen=True)
class FieldOutcome:
    name: str
    truth: str
    call: str  # BLAST_CALL | CLEAR_CALL | UNCERTAIN | NO_CELLS
    label: str  # the record's label
    outcome: str  # RIGHT | UNCERTAIN | WRONG
    subtype_match: bool | None  # a blast call on a blast field: does its label name the field's truth
    reason: str | None


def evidence(field: LabelledField, labels: Sequence[Label]) -> FieldEvidence | None:
    return pool([p for p, u in zip(field.probabilities, field.unfamiliar, strict=True) if u is None], labels)


def decisions(field: LabelledField, labels: Sequence[Label], spec: CellSpec) -> list[CellDecision]:
    from device.cells.decide import decide

    return [
        decide(p, labels, spec, unfamiliar=u)
        for p, u in zip(field.probabilities, field.unfamiliar, strict=True)
    ]


def call_field(field: LabelledField, labels: Sequence[Label], spec: CellSpec) -> FieldOutcome:
    """The station's call of one field (its cells as white cells), judged against its truth: a field
    whose truth is a blast label is right when called a blast; any other field when called without
    blasts; the opposite call is confidently wrong; an abstained field (or one without cells) is
    uncertain."""
    malignant = {lb.id: bool(lb.malignant) for lb in labels}
    decs = decisions(field, labels, spec)
    records = [
        CellRecord(i, (0, 0, 1, 1), 0.0, 0.0, "white", d.state, d.label, d.p_blast, dict(p), d.reason)
        for i, (d, p) in enumerate(zip(decs, field.probabilities, strict=True))
    ]
    if not records:
        return FieldOutcome(field.name, field.truth, NO_CELLS, "", UNCERTAIN, None, "no white cell")
    ev = evidence(field, labels)
    pooled = pooled_verdict(ev, spec, sum(d.state == BLAST for d in decs))
    label, abstained, reason, _ = field_call(records, [lb.id for lb in labels], pooled, ev)
    call = UNCERTAIN if abstained else BLAST_CALL if malignant.get(label, False) else CLEAR_CALL
    truth_blast = malignant.get(field.truth, False)
    outcome = UNCERTAIN if call == UNCERTAIN else RIGHT if (call == BLAST_CALL) == truth_blast else WRONG
    match = (label == field.truth) if truth_blast and call == BLAST_CALL else None
    return FieldOutcome(field.name, field.truth, call, label, outcome, match, reason)


def choose_thresholds(
    fields: Sequence[LabelledField], labels: Sequence[Label], *, margin: float, min_cells: int
) -> tuple[float, float, dict]:
    """(clear, blast) thresholds from the validation `fields` (module docstring) and how."""
    malignant = {lb.id: bool(lb.malignant) for lb in labels}
    blast_means, clear_means = [], []
    for f in fields:
        ev = evidence(f, labels)
        if ev is None or ev.cells < min_cells:
            continue
        (blast_means if malignant.get(f.truth, False) else clear_means).append(ev.p_blast)
    if not blast_means or not clear_means:
        raise ValueError("the validation fields need fields with and without blasts to set the field rule")
    above_clear, below_blast = max(clear_means) + margin, min(blast_means) - margin
    lo = max(0.0, min(above_clear, below_blast))
    hi = min(1.0, max(above_clear, below_blast))
    doc = {
        "rule": __doc__.split("\n\n")[2].strip() if __doc__ else "",
        "margin": margin,
        "min_cells": min_cells,
        "fields_with_blasts": len(blast_means),
        "fields_without_blasts": len(clear_means),
        "lowest_mean_with_blasts": min(blast_means),
        "highest_mean_without_blasts": max(clear_means),
    }
    return round(lo, 4), round(hi, 4), doc


def with_thresholds(spec: CellSpec, lo: float, hi: float, min_cells: int) -> CellSpec:
    return replace(spec, field_clear_threshold=lo, field_blast_threshold=hi, field_min_cells=min_cells)


def summary(outcomes: Iterable[FieldOutcome]) -> dict:
    outs = list(outcomes)
    n = len(outs)
    c = Counter(o.outcome for o in outs)
    called = [o for o in outs if o.subtype_match is not None]
    by_truth: dict[str, Counter] = {}
    for o in outs:
        key = o.call if o.call != BLAST_CALL else f"blast:{o.label}"
        by_truth.setdefault(o.truth, Counter())[key] += 1
    return {
        "n": n,
        "right": c[RIGHT],
        "uncertain": c[UNCERTAIN],
        "confidently_wrong": c[WRONG],
        "accuracy": c[RIGHT] / n if n else None,
        "uncertain_rate": c[UNCERTAIN] / n if n else None,
        "wrong_rate": c[WRONG] / n if n else None,
        "blast_calls_on_blast_fields": len(called),
        "subtype_matches": sum(bool(o.subtype_match) for o in called),
        "four_class_right": sum(
            1 for o in outs if o.outcome == RIGHT and (o.subtype_match is None or o.subtype_match)
        ),
        "by_truth": {t: dict(sorted(v.items())) for t, v in sorted(by_truth.items())},
    }


def labelled_fields(ens, crops_root, split: dict, part: str, limit: int = 0) -> list[LabelledField]:
    """The B-ALL fields of a split part as the station reads them, through the ensemble."""
    from training.cells.cellprobs import crop_spec, field_sources, field_tables, load_part, station_fields

    crops, manifest = load_part(crops_root, split, part)
    src = field_sources(crops)
    if limit:
        src = src[:: max(1, len(src) // limit)]
    fl = station_fields(src, manifest, crop_spec(manifest))
    tabs = field_tables(ens, fl)
    return [
        LabelledField(f.source_image, f.truth, tuple(tab.rows()), tuple(tab.unfamiliar))
        for f, tab in zip(fl, tabs, strict=True)
    ]


def normal_fields(
    probabilities: Sequence[Mapping[str, float]],
    unfamiliar: Sequence[str | None],
    labels: Sequence[Label],
    spec: CellSpec,
    *,
    n_fields: int = 2000,
    sizes: tuple[int, int] = (3, 12),
    seed: int = 0,
) -> dict:
    """Fields of normal cells only, drawn at random from single normal cells (another lab's test cells:
    `sizes` cells each, inclusive), called by the station's rule: how many would be called a blast field
    (the rule's confident error on a normal smear), how many abstain, how many are cleared."""
    import numpy as np

    rng = np.random.default_rng(seed)
    idx = np.arange(len(probabilities))
    outs = []
    for k in range(n_fields):
        size = int(rng.integers(sizes[0], sizes[1] + 1))
        pick = rng.choice(idx, size=min(size, len(idx)), replace=False)
        f = LabelledField(
            f"normal-{k}",
            "",
            tuple(probabilities[i] for i in pick),
            tuple(unfamiliar[i] for i in pick),
        )
        outs.append(call_field(f, labels, spec).call)
    c = Counter(outs)
    n = len(outs)
    return {
        "n": n,
        "cells_per_field": list(sizes),
        "called_blast": c[BLAST_CALL] / n if n else None,
        "uncertain": c[UNCERTAIN] / n if n else None,
        "cleared": c[CLEAR_CALL] / n if n else None,
    }
