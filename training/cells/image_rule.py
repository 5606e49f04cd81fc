"""A B-ALL field's call from its decided white cells: which of Benign / Early / Pre / Pro the image is.

Each cell first gets the station's per-cell decision (`device.cells.decide.decide`: blast, not_blast
or unclassified, and its type when named). RULE, in order, over the field's WHITE cells (labels whose
`white` flag is false, platelets and erythroblasts, are left out):
1. no white cell -> no_cells;
2. at least `min_blasts` (k) blasts AND blasts at least `min_share` (s) of the decided (blast or
   not_blast) cells -> malignant, when the blast label most blasts were named (ties: the higher summed
   confidence) holds at least `min_subtype_share` (m) of the blasts: that label is the subtype; a field
   whose blasts split between subtypes is uncertain (the image's class is unsure, not its malignancy);
3. no blast, at least one cell named hematogone and unclassified cells at most `max_unclassified` (u)
   of the white cells -> benign (the field's B-cell precursors are benign);
4. anything else -> uncertain (refer).
k, s, m and u are chosen on the validation split (`choose_rule`), never on test.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from device.cells.decide import BLAST, NOT_BLAST, UNCLASSIFIED, CellDecision

BENIGN_MARKER = "hematogone"


@dataclass(frozen=True)
class RuleParams:
    min_blasts: int = 1  # k
    min_share: float = 0.0  # s
    max_unclassified: float = 1.0  # u
    min_subtype_share: float = 0.0  # m

    def text(self) -> str:
        return (
            f"malignant when >= {self.min_blasts} cells are blasts and blasts are >= "
            f"{100 * self.min_share:.0f}% of the decided white cells and the most frequent blast label "
            f"holds >= {100 * self.min_subtype_share:.0f}% of them (the subtype); benign when no cell "
            f"is a blast, >= 1 is named {BENIGN_MARKER} and <= "
            f"{100 * self.max_unclassified:.0f}% are unclassified; no_cells without white cells; "
            "else uncertain"
        )


@dataclass(frozen=True)
class FieldCall:
    state: str  # malignant | benign | uncertain | no_cells
    label: str | None  # the blast label for malignant, BENIGN_MARKER for benign, else None
    n_cells: int
    n_blast: int
    n_unclassified: int


def field_call(decisions: Sequence[CellDecision], white: Mapping[str, bool], params: RuleParams) -> FieldCall:
    """`white`: label id -> counted as a white cell (the bundle's labels; unknown ids count)."""
    cells = [d for d in decisions if d.label is None or white.get(d.label, True)]
    n = len(cells)
    blasts = [d for d in cells if d.state == BLAST]
    unclassified = sum(d.state == UNCLASSIFIED for d in cells)
    decided = sum(d.state in (BLAST, NOT_BLAST) for d in cells)
    if n == 0:
        return FieldCall("no_cells", None, 0, 0, 0)
    if blasts and len(blasts) >= params.min_blasts and len(blasts) >= params.min_share * decided:
        votes: dict[str, tuple[int, float]] = {}
        for d in blasts:
            k, s = votes.get(str(d.label), (0, 0.0))
            votes[str(d.label)] = (k + 1, s + d.confidence)
        best = max(votes, key=lambda lb: votes[lb])
        if votes[best][0] >= params.min_subtype_share * len(blasts):
            return FieldCall("malignant", best, n, len(blasts), unclassified)
        return FieldCall("uncertain", None, n, len(blasts), unclassified)
    named_marker = any(d.state == NOT_BLAST and d.label == BENIGN_MARKER for d in cells)
    if not blasts and named_marker and unclassified <= params.max_unclassified * n:
        return FieldCall("benign", BENIGN_MARKER, n, 0, unclassified)
    return FieldCall("uncertain", None, n, len(blasts), unclassified)


@dataclass(frozen=True)
class FieldScore:
    n: int
    correct: int
    uncertain: int  # uncertain or no_cells
    wrong: int  # a call (malignant or benign) that is not the field's class

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def uncertain_rate(self) -> float:
        return self.uncertain / self.n if self.n else 0.0

    @property
    def wrong_rate(self) -> float:
        return self.wrong / self.n if self.n else 0.0


def is_correct(call: FieldCall, truth: str) -> bool:
    """`truth`: the field's class as a cell label (hematogone = Benign, blast_* = that subtype)."""
    return call.state in ("malignant", "benign") and call.label == truth


def score(calls: Iterable[tuple[FieldCall, str]]) -> FieldScore:
    n = correct = uncertain = wrong = 0
    for call, truth in calls:
        n += 1
        if call.state in ("uncertain", "no_cells"):
            uncertain += 1
        elif is_correct(call, truth):
            correct += 1
        else:
            wrong += 1
    return FieldScore(n, correct, uncertain, wrong)


def choose_rule(
    fields: Sequence[tuple[Sequence[CellDecision], str]],
    white: Mapping[str, bool],
    *,
    max_wrong: float = 0.005,
    ks: Sequence[int] = (1, 2, 3, 4, 5),
    shares: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6),
    unclassified: Sequence[float] = (0.1, 0.2, 0.3, 0.5, 1.0),
    subtype_shares: Sequence[float] = (0.0, 0.6, 0.7, 0.8),
) -> tuple[RuleParams, FieldScore]:
    """The (k, s, u, m) of highest accuracy among those whose confidently-wrong field rate stays within
    `max_wrong` (ties: the more cautious, i.e. larger k, s and m, smaller u); when none does, the one of
    fewest wrong fields. `fields`: (the field's cell decisions, its truth)."""
    best: tuple[tuple, RuleParams, FieldScore] | None = None
    for k in ks:
        for s in shares:
            for u in unclassified:
                for m in subtype_shares:
                    p = RuleParams(k, s, u, m)
                    sc = score((field_call(d, white, p), t) for d, t in fields)
                    ok = sc.wrong_rate <= max_wrong
                    key = (ok, sc.correct if ok else -sc.wrong, k, s, m, -u)
                    if best is None or key > best[0]:
                        best = (key, p, sc)
    assert best is not None
    return best[1], best[2]
