"""`ClassifiedCells` → `FieldCells`: the per-cell records, the field's differential, its field line and
the record's call.

The record's label (safety first: a blast is never hidden behind the commoner cells of its field).
When the bundle has a field rule and the field enough white cells (`device.cells.field`), the rule
calls the field: a blast field → the blast label of the highest mean probability over the pooled cells
(the subtype is information; the pooled mean names the field's subtype more often than the commonest
decided blast label); a field without blasts → the most frequent named type when every white cell
was read, else the white type of the highest mean probability; between the two → abstained with the
rule's reason. In a field the rule called, an unclassified cell leaning the field's way is read with its
field (`device.cells.field.read_with_field`) before the differential is counted. Otherwise the cells'
own decisions call it:
- at least one white cell decided a blast → the most frequent blast label, not abstained;
- else, every white cell read (none unclassified) → the most frequent named type (or
  `device.cells.count.UNNAMED` for cells confidently not blasts whose type is not named), not abstained;
- else → abstained, reason "N of M white cells unclassified" (the label is the most frequent read
  type, or "unclassified" when none was read);
- no white cell → state "no_cells" (the camera stores nothing; an upload's record says so);
- a refused frame (scale) → state "refused", abstained, the refusal as its reason.
Ties go to the bundle's label order. Platelets and other bodies are listed, never counted.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

from device.cells.count import UNCLASSIFIED, UNNAMED, UNNAMED_DISPLAY, Differential, count_label, differential
from device.cells.decide import BLAST, NOT_BLAST
from device.cells.detect import WHITE
from device.cells.field import FieldEvidence, PooledVerdict, pool, pooled_verdict, read_with_field
from device.cells.record import CellRecord
from device.models.bundle import CellSpec, Label
from device.screening.stages import (
    COUNTED,
    NO_CELLS,
    REFUSED,
    ClassifiedCell,
    ClassifiedCells,
    DetectedCells,
    FieldCells,
    LiveCell,
    PreparedFrame,
    ScreenSettings,
    Timings,
)

#: Okabe-Ito colours, told apart with the common colour-vision deficiencies (the page repeats the state
#: in the outline's line style and in words, so colour is never the only signal): a blast vermillion,
#: an unclassified cell amber, a white cell of no named type blue, what is not a white cell grey.
BLAST_COLOUR = "#D55E00"
UNCLASSIFIED_COLOUR = "#E69F00"
UNNAMED_COLOUR = "#0072B2"
NOT_WHITE_COLOUR = "#C7C7C7"
#: Colours of the named types that are not blasts, in the bundle's label order.
TYPE_COLOURS = ("#56B4E9", "#009E73", "#F0E442", "#CC79A7", "#000000")


def class_colours(labels: Sequence[Label]) -> dict[str, str]:
    """label id → the colour its cells are outlined in (every blast vermillion)."""
    out, k = {}, 0
    for lb in labels:
        if lb.malignant:
            out[lb.id] = BLAST_COLOUR
        elif not lb.white:
            out[lb.id] = NOT_WHITE_COLOUR
        else:
            out[lb.id] = TYPE_COLOURS[k % len(TYPE_COLOURS)]
            k += 1
    return out


def _plural(display: str, n: int) -> str:
    """'Lymphocyte' → 'lymphocytes'; 'Hematogone (benign ...)' → 'hematogones (benign ...)'."""
    head, sep, tail = display.partition(" (")
    head = head[:1].lower() + head[1:]
    if n != 1 and not head.endswith("s"):
        head += "s"
    return head + sep + tail


def field_line(diff: Differential) -> str:
    """'7 white cells: 5 lymphocytes, 2 blasts': the blasts as one group (their subtypes are in the
    differential) and the named types by count (blasts first on a tie), then the unnamed, the
    unclassified and what is listed but not counted."""
    total = diff.counted + diff.unclassified
    groups = [(c.n, 1, f"{c.n} {_plural(c.display, c.n)}") for c in diff.counts if not c.blast and c.n]
    if diff.blasts:
        groups.append((diff.blasts, 0, f"{diff.blasts} blast" + ("s" if diff.blasts != 1 else "")))
    parts = [text for _, _, text in sorted(groups, key=lambda g: (-g[0], g[1]))]
    if diff.unnamed:
        parts.append(f"{diff.unnamed} of type not named")
    if diff.unclassified:
        parts.append(f"{diff.unclassified} unclassified")
    line = f"{total} white cell" + ("s" if total != 1 else "")
    line += ": " + ", ".join(parts) if parts else ""
    others = [f"{c.n} {_plural(c.display, c.n)}" for c in diff.others if c.n]
    if others:
        line += " (not counted: " + ", ".join(others) + ")"
    return line


def _most_frequent(labels: list[str], order: list[str]) -> str:
    tally = Counter(labels)
    rank = {lb: i for i, lb in enumerate(order)}
    return min(tally, key=lambda lb: (-tally[lb], rank.get(lb, len(rank))))


def field_call(
    records: Sequence[CellRecord],
    label_order: list[str],
    pooled: PooledVerdict | None = None,
    evidence: FieldEvidence | None = None,
) -> tuple[str, bool, str | None, float]:
    """(label, abstained, reason, confidence) of a field's white `records` (at least one) by the rule
    in this module's docstring, or by the field rule's `pooled` verdict when it applies (with the
    `evidence` it came from). Confidence: the highest blast probability of a blast call, else the
    lowest not-blast probability among the cells read (the pooled mean for a pooled call)."""
    order = [*label_order, UNNAMED]
    if pooled is not None and evidence is not None:
        return _pooled_call(records, order, pooled, evidence)
    blasts = [r for r in records if r.state == BLAST]
    if blasts:
        label = _most_frequent([r.label or UNNAMED for r in blasts], order)
        return label, False, None, max(r.p_blast for r in blasts)
    read = [r for r in records if r.state != UNCLASSIFIED]
    labels = [count_label(r.state, r.label) or UNNAMED for r in read]
    confidence = min((1.0 - r.p_blast for r in read), default=0.0)
    if len(read) == len(records):
        return _most_frequent(labels, order), False, None, confidence
    reason = f"{len(records) - len(read)} of {len(records)} white cells unclassified"
    label = _most_frequent(labels, order) if labels else UNCLASSIFIED
    return label, True, reason, confidence


def _pooled_call(
    records: Sequence[CellRecord], order: list[str], pooled: PooledVerdict, ev: FieldEvidence
) -> tuple[str, bool, str | None, float]:
    if pooled.state == BLAST:
        blasts = [r.label or UNNAMED for r in records if r.state == BLAST]
        label = ev.blast_label or (_most_frequent(blasts, order) if blasts else UNNAMED)
        return label, False, None, ev.p_blast
    read = [count_label(r.state, r.label) or UNNAMED for r in records if r.state != UNCLASSIFIED]
    if pooled.state == NOT_BLAST:
        label = _most_frequent(read, order) if len(read) == len(records) else ev.other_label or UNNAMED
        return label, False, None, 1.0 - ev.p_blast
    return (_most_frequent(read, order) if read else UNCLASSIFIED), True, pooled.reason, 0.0


def _record(i: int, c) -> CellRecord:
    cell, d = c.cell, c.decision
    if d is None:
        why = f"not a white cell ({cell.kind}): not classified, not counted"
        return CellRecord(i, cell.box, cell.x, cell.y, cell.kind, UNCLASSIFIED, None, 0.0, {}, why)
    return CellRecord(
        i, cell.box, cell.x, cell.y, cell.kind, d.state, d.label, d.p_blast, dict(c.probabilities), d.reason
    )


def _with_field(
    r: CellRecord,
    c: ClassifiedCell,
    labels: Sequence[Label],
    spec: CellSpec,
    pooled: PooledVerdict,
    ev: FieldEvidence,
) -> CellRecord:
    """An unclassified familiar white cell read with its field (`device.cells.field.read_with_field`)."""
    if r.kind != WHITE or r.state != UNCLASSIFIED or not _pooled(c):
        return r
    d = read_with_field(c.probabilities, r.p_blast, labels, spec, pooled, ev)
    return r if d is None else dataclasses.replace(r, state=d.state, label=d.label, reason=d.reason)


def _pooled(c: ClassifiedCell) -> bool:
    return c.cell.kind == WHITE and c.decision is not None and c.unfamiliar is None and bool(c.probabilities)


def _live(records: Sequence[CellRecord], labels: Sequence[Label]) -> tuple[LiveCell, ...]:
    colours = class_colours(labels)
    display = {lb.id: lb.display for lb in labels}
    out = []
    for r in records:
        if r.kind != WHITE:
            text, colour = r.kind, NOT_WHITE_COLOUR
        elif r.state == UNCLASSIFIED:
            text, colour = "unclassified", UNCLASSIFIED_COLOUR
        elif r.label is None:
            text, colour = UNNAMED_DISPLAY, UNNAMED_COLOUR
        else:
            text, colour = display.get(r.label, r.label), colours.get(r.label, UNNAMED_COLOUR)
        out.append(LiveCell(r.index, tuple(r.box), r.kind, r.state, r.label, text, colour))  # type: ignore[arg-type]
    return tuple(out)


def refused_result(prepared: PreparedFrame) -> FieldCells:
    reason = prepared.refused or "not screened"
    return FieldCells(
        REFUSED, (), None, "", UNCLASSIFIED, True, reason, 0.0, {}, prepared,
        timings=Timings(prepare_ms=prepared.prepare_ms),
    )  # fmt: skip


def field_result(
    prepared: PreparedFrame,
    detected: DetectedCells,
    classified: ClassifiedCells,
    labels: Sequence[Label],
    settings: ScreenSettings,
    spec: CellSpec | None = None,
) -> FieldCells:
    """`spec`: the cell bundle's section, whose field rule (when it has one) calls the field."""
    import time

    t0 = time.perf_counter()
    records = tuple(_record(i, c) for i, c in enumerate(classified.cells))
    whites = [r for r in records if r.kind == WHITE]
    label_ids = [lb.id for lb in labels]
    evidence = pool([c.probabilities for c in classified.cells if _pooled(c)], labels)
    blasts = sum(r.state == BLAST for r in whites)
    pooled = pooled_verdict(evidence, spec, blasts) if spec is not None else None
    if pooled is not None and evidence is not None and spec is not None:
        records = tuple(
            _with_field(r, c, labels, spec, pooled, evidence)
            for r, c in zip(records, classified.cells, strict=True)
        )
        whites = [r for r in records if r.kind == WHITE]
    diff = differential(
        [count_label(r.state, r.label) for r in whites],
        labels,
        target=settings.target,
        threshold=settings.threshold,
        max_unclassified=settings.max_unclassified,
    )
    if whites:
        state = COUNTED
        label, abstained, reason, confidence = field_call(whites, label_ids, pooled, evidence)
        line = field_line(diff)
        read = [r for r in whites if r.probabilities]
        probs = (
            {lb: sum(r.probabilities.get(lb, 0.0) for r in read) / len(read) for lb in label_ids}
            if read
            else {}
        )
    else:
        state, label, abstained, confidence, probs = NO_CELLS, UNCLASSIFIED, True, 0.0, {}
        line = "no white cells in view"
        reason = line
    ms = (time.perf_counter() - t0) * 1000
    timings = Timings(prepared.prepare_ms, detected.detect_ms, classified.crop_ms, classified.infer_ms, ms)
    return FieldCells(
        state, records, diff if whites else None, line, label, abstained, reason, confidence, probs,
        prepared, _live(records, labels), timings, evidence,
    )  # fmt: skip
