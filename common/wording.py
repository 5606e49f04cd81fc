"""The safety sentences every page, export, report and model card carries, spelled once."""

from __future__ import annotations

#: On every page, export, report and model card.
DISCLAIMER = "A screening aid for trained staff, not a diagnosis."
#: What an abstaining result says instead of a label.
UNCERTAIN = "uncertain — refer to a hematologist"
