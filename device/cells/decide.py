"""One cell's call from a cell classifier's probabilities (safety first).

The screen asks one question of every white cell: blast or not. The blast labels' summed probability
decides it against the bundle's `cells.blast_threshold`; a cell between the two sides is unclassified
(counted apart, shown for review). Which subtype a blast is, and which normal type a non-blast cell is,
is information: a non-blast cell whose type is unsure still counts as a white cell that is not a blast.
A cell the content check finds unfamiliar is unclassified whatever its probabilities say.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from device.models.bundle import CellSpec, Label

BLAST = "blast"
NOT_BLAST = "not_blast"
UNCLASSIFIED = "unclassified"


@dataclass(frozen=True)
class CellDecision:
    state: str  # BLAST | NOT_BLAST | UNCLASSIFIED
    label: str | None  # the named type (a blast's subtype, a normal type); None when not named
    p_blast: float  # summed probability of the blast labels
    confidence: float  # share of `label` within its side (blast or not); 0.0 when `label` is None
    reason: str | None = None  # why a cell is unclassified or its type not named (English, for details)


def decide(
    probabilities: Mapping[str, float],
    labels: Sequence[Label],
    spec: CellSpec,
    *,
    unfamiliar: str | None = None,
) -> CellDecision:
    """`probabilities`: the ensemble's calibrated probabilities by label id; `labels`: the bundle's
    labels (their `malignant` flag says which are blasts); `unfamiliar`: the content check's reason,
    when it fired."""
    blast_ids = [lb.id for lb in labels if lb.malignant]
    other_ids = [lb.id for lb in labels if not lb.malignant]
    p_blast = float(sum(probabilities.get(i, 0.0) for i in blast_ids))
    p_other = float(sum(probabilities.get(i, 0.0) for i in other_ids))
    total = p_blast + p_other
    if total > 0:
        p_blast, p_other = p_blast / total, p_other / total
    if unfamiliar:
        return CellDecision(UNCLASSIFIED, None, p_blast, 0.0, unfamiliar)
    if p_blast >= spec.blast_threshold:
        state, side, mass = BLAST, blast_ids, p_blast
    elif p_other >= spec.blast_threshold:
        state, side, mass = NOT_BLAST, other_ids, p_other
    else:
        reason = f"blast probability {p_blast:.2f}: neither side reaches {spec.blast_threshold:.2f}"
        return CellDecision(UNCLASSIFIED, None, p_blast, 0.0, reason)
    best = max(side, key=lambda i: probabilities.get(i, 0.0))
    share = float(probabilities.get(best, 0.0)) / (mass * total) if mass > 0 and total > 0 else 0.0
    if state == BLAST or share >= spec.type_threshold:
        return CellDecision(state, best, p_blast, share)
    reason = f"type unsure: {best} {share:.2f} < {spec.type_threshold:.2f}"
    return CellDecision(state, None, p_blast, share, reason)
