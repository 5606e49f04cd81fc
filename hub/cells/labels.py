"""What the hub knows of cell labels: a label's facts are `malignant` (a blast) and `white` (counted in
a differential). Sources, most trusted first (`LabelBook.facts`):

1. the record itself: a 'cells' record stores its field's differential (`quality.differential`, the
   station's `Differential.to_dict()`, made with the labels of the bundle that classified it: `counts`
   are white-cell labels, `others` are not, each with its `blast` flag);
2. the bundles the record names, as published on this hub (hub/fleet): a record names its models by the
   sha256 of their model file (`models: [{name, sha256}]`), the value a bundle's manifest carries as
   `sha256`;
3. any bundle published on this hub.
A label that the first source holding it declares in two ways is unknown (None): never guessed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.fleet.bundle_sig import MANIFEST
from hub.fleet.tables import BundleBlob, PublishedBundle


@dataclass(frozen=True)
class LabelFact:
    malignant: bool | None
    white: bool
    display: str
    source: str  # which bundle said so


@dataclass(frozen=True)
class BundleLabels:
    name: str
    labels: dict[str, LabelFact]


@dataclass
class LabelBook:
    """Published bundles' labels by model-file sha256."""

    by_model: dict[str, BundleLabels] = field(default_factory=dict)

    def facts(self, label: str, records: Iterable[dict[str, Any]] = ()) -> LabelFact | None:
        """`label`'s facts (see the module doc) for cells of `records`; None when no source declares
        it or the first source that does declares it in two ways."""
        records = list(records)
        own = [f for r in records for f in [record_labels(r).get(label)] if f is not None]
        models = [m for r in records for m in model_shas(r)]
        named = [self.by_model[m] for m in models if m in self.by_model]
        for found in (own, [b.labels[label] for b in named if label in b.labels]):
            if found:
                return found[0] if len({(f.malignant, f.white) for f in found}) == 1 else None
        found = [b.labels[label] for b in self.by_model.values() if label in b.labels]
        if found:
            return found[0] if len({(f.malignant, f.white) for f in found}) == 1 else None
        return None


def _bundle_labels(name: str, doc: Any) -> tuple[str, BundleLabels] | None:
    if not isinstance(doc, dict) or not isinstance(doc.get("sha256"), str):
        return None
    labels: dict[str, LabelFact] = {}
    for lb in doc.get("labels") or []:
        if isinstance(lb, dict) and isinstance(lb.get("id"), str):
            malignant = lb.get("malignant")
            labels[lb["id"]] = LabelFact(
                malignant=malignant if isinstance(malignant, bool) else None,
                white=lb.get("white", True) is not False,
                display=str(lb.get("display") or lb["id"]),
                source=f"bundle {name}",
            )
    return doc["sha256"], BundleLabels(name, labels)


def label_book(s: Session) -> LabelBook:
    """The labels of every bundle published on this hub (an unreadable manifest is left out)."""
    book = LabelBook()
    for row in s.scalars(select(PublishedBundle).order_by(PublishedBundle.id)):
        try:
            files = json.loads(row.files_json)
            entry = next((f for f in files if f.get("path") == MANIFEST), None)
            if entry is None:
                continue
            data = s.scalar(select(BundleBlob.data).where(BundleBlob.sha256 == entry["sha256"]))
            found = _bundle_labels(row.name, json.loads(bytes(data or b"{}")))
        except (ValueError, TypeError, AttributeError, KeyError):
            continue
        if found is not None:
            book.by_model[found[0]] = found[1]
    return book


def record_labels(record: dict[str, Any]) -> dict[str, LabelFact]:
    """The labels a 'cells' record's stored differential declares (empty when it has none)."""
    diff = (
        (record.get("quality") or {}).get("differential") if isinstance(record.get("quality"), dict) else None
    )
    out: dict[str, LabelFact] = {}
    if not isinstance(diff, dict):
        return out
    for group, white in (("counts", True), ("others", False)):
        entries = diff.get(group)
        for tc in entries if isinstance(entries, list) else []:
            if isinstance(tc, dict) and isinstance(tc.get("id"), str) and isinstance(tc.get("blast"), bool):
                display = str(tc.get("display") or tc["id"])
                out.setdefault(tc["id"], LabelFact(tc["blast"], white, display, "the record's differential"))
    return out


def model_shas(record: dict[str, Any]) -> list[str]:
    """The model-file sha256s a record names."""
    return [
        m["sha256"]
        for m in record.get("models") or []
        if isinstance(m, dict) and isinstance(m.get("sha256"), str)
    ]
