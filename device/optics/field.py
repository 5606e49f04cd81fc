"""The field rule: many tile predictions → one result for the field of view. Safety first.

In order (the first that applies decides):
1. no tile holds a nucleated cell                 → state "no white cells in view" (never "Benign");
2. confident tiles (not abstained) say benign AND malignant
                                                  → "uncertain — refer" (tiles disagree);
3. confident tiles say malignant, of more than one subtype
                                                  → "uncertain — refer" (malignant in every confident
                                                    tile, subtype unclear);
4. confident tiles say one malignant label        → that label, whatever the other tiles' average:
                                                    one confident malignant tile is never averaged away;
5. confident tiles say benign, but an abstaining tile leans malignant (its arg-max is malignant)
                                                  → "uncertain — refer" (a doubtful cell may be a blast);
6. confident tiles all say benign                 → benign;
7. every tile abstained                           → "uncertain — refer" with the tiles' reasons.

The field's probabilities are the mean over the tiles that decided (the confident tiles with the
field's label; for 5 and 7 all tiles), its confidence is the label's mean probability there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from common.wording import UNCERTAIN
from device.models.ensemble import Prediction

NO_CELLS = "no white cells in view"
RULE = (
    "Field rule: tiles without a white cell are skipped (none at all: 'no white cells in view'); "
    "confident tiles that disagree between benign and malignant, or on the malignant subtype, make the "
    "field 'uncertain — refer'; one confident malignant tile makes the field malignant; a benign field "
    "needs every confident tile benign and no doubtful tile leaning malignant."
)


@dataclass
class FieldResult:
    state: str  # "classified" | "uncertain" | "no_cells" | "refused"
    label: str | None  # the field's label (arg-max of the deciding tiles), None for no_cells/refused
    confidence: float
    probabilities: dict[str, float]
    abstained: bool
    reason: str | None
    tiles: list[Prediction] = field(default_factory=list)
    tile_labels: dict[str, int] = field(default_factory=dict)  # confident tiles per label
    n_abstained: int = 0

    @property
    def display(self) -> str:
        if self.state == "no_cells":
            return NO_CELLS
        if self.state == "refused":
            return "not classified: " + (self.reason or "")
        return UNCERTAIN if self.abstained else (self.label or UNCERTAIN)

    def to_prediction(self, labels: Sequence[str], inference_ms: float = 0.0) -> Prediction:
        """The field as a Prediction (what records take). A field with no call (no white cells, not
        classified) has zero probabilities, `abstained` and its state as the reason; records need a
        label, so it carries the first one, which pages never show for such a record."""
        if self.state in ("no_cells", "refused") or not self.probabilities:
            return Prediction(
                list(labels), {lb: 0.0 for lb in labels}, labels[0], 0.0, True, self.display, {}, None,
                inference_ms,
            )  # fmt: skip
        probs = dict(self.probabilities)
        label = self.label or max(probs, key=lambda k: probs[k])
        return Prediction(
            labels=list(labels),
            probabilities=probs,
            label=label,
            confidence=float(probs[label]),
            abstained=self.abstained,
            reason=self.reason,
            inference_ms=inference_ms,
        )


def _mean(preds: Sequence[Prediction], labels: Sequence[str]) -> dict[str, float]:
    arr = np.array([[p.probabilities[lb] for lb in labels] for p in preds], dtype=np.float64)
    return {lb: float(v) for lb, v in zip(labels, arr.mean(axis=0), strict=True)}


def combine(tiles: Sequence[Prediction], labels: Sequence[str], malignant: set[str]) -> FieldResult:
    """Apply the rule above to the classified tiles' predictions (already thresholded by the ensemble)."""
    if not tiles:
        return FieldResult("no_cells", None, 0.0, {}, True, NO_CELLS)
    confident = [p for p in tiles if not p.abstained]
    doubtful = [p for p in tiles if p.abstained]
    counts = Counter(p.label for p in confident)
    mal = {lb for lb in counts if lb in malignant}
    ben = {lb for lb in counts if lb not in malignant}
    base = {"tiles": list(tiles), "tile_labels": dict(counts), "n_abstained": len(doubtful)}

    def uncertain(reason: str, deciding: Sequence[Prediction]) -> FieldResult:
        probs = _mean(deciding, labels)
        top = max(probs, key=lambda k: probs[k])
        return FieldResult("uncertain", top, probs[top], probs, True, reason, **base)

    def decided(label: str) -> FieldResult:
        group = [p for p in confident if p.label == label]
        probs = _mean(group, labels)
        return FieldResult("classified", label, probs[label], probs, False, None, **base)

    if mal and ben:
        parts = ", ".join(f"{lb} x{counts[lb]}" for lb in sorted(counts))
        return uncertain(f"tiles disagree between benign and malignant ({parts})", confident)
    if len(mal) > 1:
        parts = ", ".join(f"{lb} x{counts[lb]}" for lb in sorted(counts))
        return uncertain(f"malignant in every confident tile, subtypes differ ({parts})", confident)
    if mal:
        return decided(next(iter(mal)))
    if confident:
        leaning = [p for p in doubtful if p.label in malignant]
        if leaning:
            return uncertain(
                f"{len(leaning)} doubtful tile(s) lean malignant ({leaning[0].label}: {leaning[0].reason})",
                list(tiles),
            )
        if len(ben) > 1:  # several benign labels (a model with more than one): still benign, but say so
            return uncertain("tiles disagree between benign labels", confident)
        return decided(next(iter(ben)))
    if len(doubtful) == 1:
        return uncertain(doubtful[0].reason or "uncertain", list(tiles))
    reasons = Counter(p.reason or "uncertain" for p in doubtful)
    why = "; ".join(f"{r} ({n} tile{'s' if n > 1 else ''})" for r, n in reasons.most_common(2))
    return uncertain(why, list(tiles))
