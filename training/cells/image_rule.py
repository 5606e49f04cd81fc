"""A B-ALL field's call from its white cells (safety first).

RULE, in order:
1. at least one cell confidently called a blast -> the field is malignant; its subtype is the blast label
   most cells were confidently called (ties: the higher summed confidence);
2. else, any cell "uncertain" -> the field is uncertain (refer): an unread cell may be the blast;
3. else, no cell -> no_cells (nothing to call);
4. else (every cell confidently not a blast) -> benign.
One confident blast suffices because a missed leukaemia is the worst outcome and every malignant call
goes to a haematologist anyway; a field is called benign only when every white cell in it was read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

RULE = (
    "malignant if >= 1 cell is confidently a blast (subtype: the most frequent confident blast label); "
    "else uncertain if any cell is uncertain; else benign when every cell is confidently not a blast; "
    "no_cells without cells"
)


@dataclass(frozen=True)
class CellCall:
    label: str  # arg-max label
    confidence: float
    abstained: bool


@dataclass(frozen=True)
class FieldCall:
    state: str  # malignant | benign | uncertain | no_cells
    label: str | None  # the blast label for malignant, else None
    n_cells: int
    n_blast: int
    n_uncertain: int


def field_call(cells: Sequence[CellCall], malignant: Mapping[str, bool]) -> FieldCall:
    """`malignant`: label id -> is a blast (the bundle's declared flags; unknown ids count as blasts)."""
    blasts = [c for c in cells if not c.abstained and malignant.get(c.label, True)]
    unsure = sum(c.abstained for c in cells)
    if blasts:
        votes: dict[str, tuple[int, float]] = {}
        for c in blasts:
            n, s = votes.get(c.label, (0, 0.0))
            votes[c.label] = (n + 1, s + c.confidence)
        best = max(votes, key=lambda k: votes[k])
        return FieldCall("malignant", best, len(cells), len(blasts), unsure)
    if unsure:
        return FieldCall("uncertain", None, len(cells), 0, unsure)
    if not cells:
        return FieldCall("no_cells", None, 0, 0, 0)
    return FieldCall("benign", None, len(cells), 0, 0)
