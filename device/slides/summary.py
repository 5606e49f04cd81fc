"""The slide-level call: many fields of view of one smear → one screening call and the rule behind it.

Rule (stated in every summary so a reviewer can check it):
- a field counts by its reviewed label when a technician reviewed it, else by the model's label;
- an uncertain field (the model abstained and nobody reviewed it) is counted but never decides;
- "suspicious" when at least MIN_MALIGNANT confident fields carry a malignant label and they are at
  least MIN_MALIGNANT_FRACTION of the confident fields; the subtype named is the most frequent one;
- "no malignant fields seen" when at least MIN_FIELDS confident fields and none is malignant;
- otherwise "insufficient": capture more fields.
It is a screening aid for trained staff, not a diagnosis: a hematologist reviews every slide.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from common.wording import DISCLAIMER

MIN_MALIGNANT = 3
MIN_MALIGNANT_FRACTION = 0.2
MIN_FIELDS = 10

RULE = (
    f"suspicious if >= {MIN_MALIGNANT} confident fields have a malignant label and they are >= "
    f"{int(MIN_MALIGNANT_FRACTION * 100)}% of confident fields; 'no malignant fields seen' if >= "
    f"{MIN_FIELDS} confident fields and none malignant; otherwise insufficient. Uncertain fields are "
    "counted but never decide; a reviewed field counts by its reviewed label."
)


def is_malignant(label: str, malignant: Mapping[str, bool | None]) -> bool:
    """Whether a label is malignant: from the bundle's labels, else by name (anything not benign/normal)."""
    flag = malignant.get(label)
    if flag is not None:
        return bool(flag)
    return label.lower() not in ("benign", "normal", "healthy", "hematogone", "hematogones", "hem")


def summarise(
    fields: Iterable[Mapping[str, Any]],
    malignant: Mapping[str, bool | None],
    reviews: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`fields`: classification records (`id`, `label`, `abstained`); `reviews`: id → reviewed label."""
    reviews = reviews or {}
    counted = 0
    uncertain = 0
    reviewed = 0
    confident: Counter[str] = Counter()
    for f in fields:
        counted += 1
        label = reviews.get(f["id"])
        if label is not None:
            reviewed += 1
        elif f.get("abstained"):
            uncertain += 1
            continue
        else:
            label = f["label"]
        confident[label] += 1
    n_conf = sum(confident.values())
    malignant_counts = Counter({lb: n for lb, n in confident.items() if is_malignant(lb, malignant)})
    n_mal = sum(malignant_counts.values())
    if n_mal >= MIN_MALIGNANT and n_conf and n_mal / n_conf >= MIN_MALIGNANT_FRACTION:
        top = malignant_counts.most_common(1)[0][0]
        call = "suspicious"
        text = f"suspicious for malignancy (most fields: {top}) — refer to a hematologist"
    elif n_conf >= MIN_FIELDS and n_mal == 0:
        top = None
        call = "no_malignant_seen"
        text = "no malignant fields seen"
    else:
        top = None
        call = "insufficient"
        need = max(MIN_FIELDS - n_conf, 1)
        text = f"insufficient — capture at least {need} more confident field(s)"
    return {
        "fields": counted,
        "confident_fields": n_conf,
        "uncertain_fields": uncertain,
        "reviewed_fields": reviewed,
        "malignant_fields": n_mal,
        "label_counts": dict(sorted(confident.items())),
        "label_fractions": {lb: round(n / n_conf, 4) for lb, n in sorted(confident.items())}
        if n_conf
        else {},
        "call": call,
        "call_text": text,
        "top_malignant_label": top,
        "rule": RULE,
        "disclaimer": DISCLAIMER,
    }
