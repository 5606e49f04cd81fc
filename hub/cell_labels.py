"""What the hub knows of cell labels: from the manifests of the bundles published on it (hub/fleet).

A record names its models by the sha256 of their model file (`models: [{name, sha256}]`), the same
value a bundle's manifest carries as `sha256`; so a record's cell labels are looked up in the bundles
that made it. A label's facts are `malignant` (a blast) and `white` (counted in a differential).
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
    crop_um: float | None  # a cell bundle's crop side: input width x input µm/px


@dataclass
class LabelBook:
    """Published bundles' labels by model-file sha256."""

    by_model: dict[str, BundleLabels] = field(default_factory=dict)

    def facts(self, label: str, models: Iterable[str] = ()) -> LabelFact | None:
        """`label`'s facts from the bundles `models` (sha256s) name, else from every published bundle;
        None when no bundle declares it or the declarations disagree on malignant/white."""
        for pool in ([self.by_model[m] for m in models if m in self.by_model], self.by_model.values()):
            found = [b.labels[label] for b in pool if label in b.labels]
            if found:
                if len({(f.malignant, f.white) for f in found}) > 1:
                    return None
                return found[0]
        return None

    def crop_um(self, models: Iterable[str]) -> float | None:
        """The crop side of the first cell bundle among `models` that the hub knows."""
        for m in models:
            b = self.by_model.get(m)
            if b is not None and b.crop_um:
                return b.crop_um
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
    crop = None
    inp = doc.get("input") or {}
    if isinstance(doc.get("cells"), dict) and isinstance(inp, dict):
        w, um = inp.get("width"), inp.get("um_per_px")
        if isinstance(w, int | float) and isinstance(um, int | float) and w > 0 and um > 0:
            crop = float(w) * float(um)
    return doc["sha256"], BundleLabels(name, labels, crop)


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


def model_shas(record: dict[str, Any]) -> list[str]:
    """The model-file sha256s a record names."""
    return [
        m["sha256"]
        for m in record.get("models") or []
        if isinstance(m, dict) and isinstance(m.get("sha256"), str)
    ]
