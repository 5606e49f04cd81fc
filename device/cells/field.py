"""A field's call from its white cells taken together (multiple-instance).

One cell is often ambiguous where its field is not: hematogones (benign B precursors) and blasts look
alike one by one, but a field of blasts is monotonous and a field of hematogones is not, so the field's
mean blast probability separates the two far better than any single cell (the B-ALL labels are
labels of fields). The bundle's `cells` section holds the rule's thresholds, chosen on validation
fields (`training/cells/calibrate_cells.py`):

- fewer than `field_min_cells` pooled cells, or no thresholds in the bundle: the rule does not apply
  (the field is called from its cells' own decisions, `device.screening.result`);
- mean blast probability >= `field_blast_threshold`: a blast field;
- mean <= `field_clear_threshold` and no cell decided a blast: a field without blasts;
- otherwise the field abstains (refer), so a cell decided a blast is never outvoted by its neighbours.

Pooled cells: the white cells the classifier read as familiar whose most probable label is a white
cell (a platelet or an erythroblast the detector took for a white cell is left out). Each cell keeps
its own decision, except an unclassified cell that leans the field's way itself: it is read with its
field (`read_with_field`: counted on the field's side, its reason says so), so a field the rule called
is counted, not left unread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from device.cells.decide import BLAST, NOT_BLAST, UNCLASSIFIED, CellDecision
from device.models.bundle import CellSpec, Label


@dataclass(frozen=True)
class FieldEvidence:
    cells: int  # white cells pooled
    p_blast: float  # their mean blast probability
    blast_label: str | None  # the blast label of the highest mean probability
    other_label: str | None  # ... and the white non-blast label


@dataclass(frozen=True)
class PooledVerdict:
    state: str  # BLAST | NOT_BLAST | UNCLASSIFIED (the field abstains)
    reason: str | None


def pool(probabilities: Sequence[Mapping[str, float]], labels: Sequence[Label]) -> FieldEvidence | None:
    """The evidence of a field's familiar white cells' probabilities (None: no cell to pool)."""
    white = {lb.id for lb in labels if lb.white or lb.malignant}
    blast_ids = [lb.id for lb in labels if lb.malignant]
    other_ids = [lb.id for lb in labels if not lb.malignant and lb.white]
    kept = [p for p in probabilities if p and max(p, key=lambda k: p[k]) in white]
    if not kept:
        return None
    n = len(kept)

    def mean(label: str) -> float:
        return sum(float(p.get(label, 0.0)) for p in kept) / n

    p_blast = 0.0
    for p in kept:
        b = sum(float(p.get(i, 0.0)) for i in blast_ids)
        total = b + sum(float(v) for k, v in p.items() if k not in blast_ids)
        p_blast += b / total if total > 0 else 0.0
    blast_label = max(blast_ids, key=mean) if blast_ids else None
    other_label = max(other_ids, key=mean) if other_ids else None
    return FieldEvidence(n, p_blast / n, blast_label, other_label)


def pooled_verdict(
    evidence: FieldEvidence | None, spec: CellSpec, decided_blasts: int
) -> PooledVerdict | None:
    """The field rule's verdict, or None when it does not apply (no thresholds, too few cells)."""
    if evidence is None or not spec.field_rule or evidence.cells < spec.field_min_cells:
        return None
    lo, hi = spec.field_clear_threshold, spec.field_blast_threshold
    assert lo is not None and hi is not None
    p = evidence.p_blast
    if p >= hi:
        return PooledVerdict(BLAST, None)
    if p <= lo and not decided_blasts:
        return PooledVerdict(NOT_BLAST, None)
    if p <= lo:
        return PooledVerdict(
            UNCLASSIFIED,
            f"{decided_blasts} cell(s) decided a blast in a field that reads as without blasts "
            f"(mean blast probability {p:.2f}): review the cells",
        )
    return PooledVerdict(
        UNCLASSIFIED,
        f"the field's mean blast probability {p:.2f} is between {lo:.2f} and {hi:.2f} "
        f"({evidence.cells} white cells)",
    )


def read_with_field(
    probabilities: Mapping[str, float],
    p_blast: float,
    labels: Sequence[Label],
    spec: CellSpec,
    verdict: PooledVerdict,
    evidence: FieldEvidence,
) -> CellDecision | None:
    """An unclassified familiar cell of a field the rule called, read with its field: on the field's
    side when the cell leans that way itself (blast probability >= 0.5 in a blast field, < 0.5 in a
    field without blasts), named as `decide` names a cell; None (it stays unclassified) when it leans
    the other way or the field abstained."""
    if verdict.state == BLAST and p_blast >= 0.5:
        side = [lb.id for lb in labels if lb.malignant]
    elif verdict.state == NOT_BLAST and p_blast < 0.5:
        side = [lb.id for lb in labels if not lb.malignant]
    else:
        return None
    why = f"read with its field: blast probability {p_blast:.2f}, the field's mean {evidence.p_blast:.2f}"
    mass = sum(float(probabilities.get(i, 0.0)) for i in side)
    best = max(side, key=lambda i: float(probabilities.get(i, 0.0)))
    share = float(probabilities.get(best, 0.0)) / mass if mass > 0 else 0.0
    named = verdict.state == BLAST or share >= spec.type_threshold
    return CellDecision(verdict.state, best if named else None, p_blast, share, why)
