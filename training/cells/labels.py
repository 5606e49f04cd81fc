"""The crop dataset's label file, `labels.json`: every label's display name and whether it is a blast.

The dataset declares its labels; `smearscope convert` copies them into the bundle's manifest
(convert/bundle.make_labels reads this file when the run's data folder holds one), so no code holds a
list of which cell types are malignant.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from device.errors import SmearscopeError
from device.fsutil import atomic_write_bytes

LABELS_FILE = "labels.json"
FORMAT = "smearscope-labels/1"


@dataclass(frozen=True)
class CellLabel:
    id: str  # the dataset folder name
    display: str
    malignant: bool
    source: str  # which dataset and rule gave it (documentation)


def write_labels(root: Path, labels: list[CellLabel]) -> None:
    doc = {"format": FORMAT, "labels": [asdict(lb) for lb in labels]}
    atomic_write_bytes(root / LABELS_FILE, (json.dumps(doc, indent=2) + "\n").encode())


def read_labels(root: Path) -> dict[str, CellLabel] | None:
    """The labels declared in `root/labels.json` by id, or None when the folder has no such file."""
    path = Path(root) / LABELS_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT!r}")
        out = {}
        for e in doc["labels"]:
            if not isinstance(e.get("malignant"), bool):
                raise ValueError(f"label {e.get('id')!r}: malignant must be true or false")
            out[str(e["id"])] = CellLabel(
                str(e["id"]), str(e["display"]), e["malignant"], str(e.get("source", ""))
            )
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SmearscopeError(f"{path}: {exc}") from exc
