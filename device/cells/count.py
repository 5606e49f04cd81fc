"""A white-cell differential and the slide call it supports (a screening aid for trained staff, not a
diagnosis).

Labels are never written here: the cell bundle's label list says which labels exist and which are
blasts (the label's `blast` flag, or `malignant` when it has none). A cell whose classifier abstained
is "unclassified": listed and counted apart, never in the blast share's denominator, never dropped.
Blast subtypes (e.g. Early/Pre/Pro B-ALL) are shown as information; every blast counts as a blast.

The same function serves one field (its cells' labels) and a whole slide (all its cells' labels).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: The label given to a cell the classifier could not name (abstained); also accepted as None.
UNCLASSIFIED = "unclassified"
#: A white cell that is confidently not a blast but whose type is not named: in the blast share's
#: denominator, listed as its own line.
UNNAMED = "unnamed_white"
UNNAMED_DISPLAY = "White cell, type not named"

SUSPICIOUS = "suspicious"
NO_BLASTS_SEEN = "no_blasts_seen"
COUNT_MORE = "count_more"

RULE = (
    "Blast share = blasts / classified white cells, with its exact (Clopper-Pearson) 95% interval; "
    "unclassified cells are counted apart. 'suspicious — refer' when the interval's lower bound is above "
    "the screening threshold ({threshold:g}%), at any count; 'no blasts seen in N white cells (upper 95% "
    "bound x%)' when N reaches the target ({target}) with no blast and at most {max_unclassified:g}% of "
    "the white cells unclassified; otherwise 'count more cells'. A subtype is information and never "
    "decides the call. A screening aid for trained staff, not a diagnosis."
)


@dataclass(frozen=True)
class LabelInfo:
    id: str
    display: str
    blast: bool
    white: bool = True  # False for a label that names a non-white body (e.g. a platelet): not counted


@dataclass(frozen=True)
class TypeCount:
    id: str
    display: str
    blast: bool
    n: int


@dataclass(frozen=True)
class Differential:
    counts: tuple[TypeCount, ...]  # one per white-cell label of the bundle, in the bundle's order
    others: tuple[TypeCount, ...]  # labels that are not white cells (listed, never counted)
    unclassified: int  # white cells the classifier could not name, counted apart
    unnamed: int  # white cells confidently not blasts whose type is not named (in `counted`)
    counted: int  # N: classified white cells, the blast share's denominator
    blasts: int
    blast_types: tuple[TypeCount, ...]  # the blast labels seen (information only)
    blast_fraction: float | None  # None when N = 0
    ci_low: float | None  # Clopper-Pearson 95% interval of the blast fraction
    ci_high: float | None
    target: int
    threshold: float  # screening threshold, a fraction
    call: str  # SUSPICIOUS | NO_BLASTS_SEEN | COUNT_MORE
    call_text: str
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flag(label: Any, key: str) -> Any:
    return label.get(key) if isinstance(label, Mapping) else getattr(label, key, None)


def label_infos(bundle_labels: Iterable[Any]) -> list[LabelInfo]:
    """The bundle's labels (`device.models.bundle.Label` objects or manifest dicts `{id, display, malignant |
    blast, white?}`) as `LabelInfo`. A label without a blast or malignant flag is refused: which labels
    are blasts must be declared, not guessed."""
    out = []
    for lab in bundle_labels:
        lid = _flag(lab, "id")
        if not isinstance(lid, str) or not lid:
            raise ValueError(f"a label needs an id: {lab!r}")
        blast = _flag(lab, "blast")
        if blast is None:
            blast = _flag(lab, "malignant")
        if not isinstance(blast, bool):
            raise ValueError(f"label {lid!r} does not declare whether it is a blast (blast/malignant flag)")
        white = _flag(lab, "white")
        out.append(
            LabelInfo(lid, str(_flag(lab, "display") or lid), blast, True if white is None else bool(white))
        )
    if len({i.id for i in out}) != len(out):
        raise ValueError("the bundle's label ids are not unique")
    for reserved in (UNCLASSIFIED, UNNAMED):
        if reserved in {i.id for i in out}:
            raise ValueError(f"{reserved!r} is reserved (cells the classifier could not name or type)")
    return out


def blast_interval(blasts: int, n: int) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided 95% confidence interval of a binomial proportion."""
    from scipy.stats import binomtest  # here, not at import: scipy.stats costs every process ~1 s to load

    ci = binomtest(blasts, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _blasts(k: int) -> str:
    return f"{k} blast" if k == 1 else f"{k} blasts"


@dataclass(frozen=True)
class _Tally:
    """The cells' labels sorted into the bundle's types, before any share is computed."""

    counts: tuple[TypeCount, ...]
    others: tuple[TypeCount, ...]
    unclassified: int
    unnamed: int


@dataclass(frozen=True)
class _Share:
    """The blast share of the classified white cells and its 95% interval (None when N = 0)."""

    counted: int
    blasts: int
    fraction: float | None
    low: float | None
    high: float | None


def _tally(labels_of_cells: Iterable[str | None], infos: Sequence[LabelInfo]) -> _Tally:
    by_id = {i.id: i for i in infos}
    tally: Counter[str] = Counter()
    unclassified = unnamed = 0
    for lab in labels_of_cells:
        if lab is None or lab == UNCLASSIFIED:
            unclassified += 1
        elif lab == UNNAMED:
            unnamed += 1
        elif lab in by_id:
            tally[lab] += 1
        else:
            raise ValueError(f"cell label {lab!r} is not one of the bundle's labels {sorted(by_id)}")
    counts = tuple(TypeCount(i.id, i.display, i.blast, tally[i.id]) for i in infos if i.white)
    others = tuple(TypeCount(i.id, i.display, i.blast, tally[i.id]) for i in infos if not i.white)
    return _Tally(counts, others, unclassified, unnamed)


def _share(tally: _Tally) -> _Share:
    n = sum(c.n for c in tally.counts) + tally.unnamed
    blasts = sum(c.n for c in tally.counts if c.blast)
    fraction = low = high = None
    if n:
        fraction = blasts / n
        low, high = blast_interval(blasts, n)
    return _Share(n, blasts, fraction, low, high)


def _slide_call(
    share: _Share, unclassified: int, *, target: int, threshold: float, max_unclassified: float
) -> tuple[str, str]:
    """The call (SUSPICIOUS | NO_BLASTS_SEEN | COUNT_MORE) and its sentence, by the rule in RULE."""
    n, blasts, fraction, low, high = share.counted, share.blasts, share.fraction, share.low, share.high
    total_white = n + unclassified
    too_many_unclassified = total_white > 0 and unclassified / total_white > max_unclassified
    if low is not None and low > threshold:
        call = SUSPICIOUS
        text = (
            f"suspicious — refer: {_blasts(blasts)} in {n} white cells ({_pct(fraction or 0.0)}, 95% CI "
            f"{_pct(low)}–{_pct(high or 0.0)}), clearly above the {100 * threshold:g}% screening threshold"
        )
    elif n >= target and blasts == 0 and not too_many_unclassified:
        call = NO_BLASTS_SEEN
        text = f"no blasts seen in {n} white cells (upper 95% bound {_pct(high or 0.0)})"
    else:
        call = COUNT_MORE
        goal = target if n < target else target * (n // target + 1)
        text = f"count more cells: {n} of {goal}"
        if blasts:
            text += (
                f" ({_blasts(blasts)}, {_pct(fraction or 0.0)}, 95% CI"
                f" {_pct(low or 0.0)}–{_pct(high or 0.0)}: not clearly above {100 * threshold:g}%)"
            )
        elif n >= target and too_many_unclassified:
            text += f" ({unclassified} of {total_white} white cells unclassified: review them)"
    if unclassified and "unclassified" not in text:
        text += f"; {unclassified} unclassified"
    return call, text


def differential(
    labels_of_cells: Iterable[str | None],
    bundle_labels: Sequence[Any],
    *,
    target: int = 100,
    threshold: float = 0.02,
    max_unclassified: float = 0.10,
) -> Differential:
    """Counts per type, blast share and interval, and the slide call for the white cells whose
    classifier labels are `labels_of_cells` (None or UNCLASSIFIED = not read; UNNAMED = not a blast,
    type not named; `count_label` maps a `CellDecision`).

    `threshold`: screening threshold on the blast fraction (default 0.02 = 2%); `max_unclassified`: above this
    fraction of unclassified white cells no "no blasts seen" call is made (they could hide blasts)."""
    if target < 1:
        raise ValueError("target must be at least 1")
    if not 0.0 < threshold < 1.0:
        raise ValueError("threshold is a fraction between 0 and 1")
    tally = _tally(labels_of_cells, label_infos(bundle_labels))
    share = _share(tally)
    rule = RULE.format(threshold=100 * threshold, target=target, max_unclassified=100 * max_unclassified)
    call, text = _slide_call(
        share, tally.unclassified, target=target, threshold=threshold, max_unclassified=max_unclassified
    )
    return Differential(
        counts=tally.counts,
        others=tally.others,
        unclassified=tally.unclassified,
        unnamed=tally.unnamed,
        counted=share.counted,
        blasts=share.blasts,
        blast_types=tuple(c for c in tally.counts if c.blast and c.n),
        blast_fraction=share.fraction,
        ci_low=share.low,
        ci_high=share.high,
        target=target,
        threshold=threshold,
        call=call,
        call_text=text,
        rule=rule,
    )


def count_label(state: str, label: str | None) -> str | None:
    """What `differential` counts for a cell decided as `state` (`device.cells.decide`) with `label`,
    or for a reviewed cell (state "reviewed", label its reviewed label)."""
    if state == "unclassified":
        return None
    if label is None:
        return UNNAMED if state == "not_blast" else None
    return label
