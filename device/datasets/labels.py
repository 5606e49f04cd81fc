"""A dataset's label file, `labels.json`: every label's display name, whether it is malignant (a
blast, for a cell dataset) and whether it is a white cell (counted; absent = true).

A dataset declares its labels; `smearscope convert` copies them into the bundle's manifest
(convert/bundle.make_labels reads this file when the run's data folder holds one), so no code holds a
list of which labels are malignant. Written by dataset builders (training/cells/build_crops.py).
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
class DatasetLabel:
    id: str  # the dataset folder name
    display: str
    malignant: bool
    source: str  # which dataset and rule gave it (documentation)
    #: a white cell (counted in a differential); False for a platelet or an erythroblast (named, not counted)
    white: bool = True


def write_labels(root: Path, labels: list[DatasetLabel]) -> None:
    doc = {"format": FORMAT, "labels": [asdict(lb) for lb in labels]}
    atomic_write_bytes(root / LABELS_FILE, (json.dumps(doc, indent=2) + "\n").encode())


def read_labels(root: Path) -> dict[str, DatasetLabel] | None:
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
            white = e.get("white", True)
            if not isinstance(white, bool):
                raise ValueError(f"label {e.get('id')!r}: white must be true or false")
            out[str(e["id"])] = DatasetLabel(
                str(e["id"]), str(e["display"]), e["malignant"], str(e.get("source", "")), white
            )
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SmearscopeError(f"{path}: {exc}") from exc
