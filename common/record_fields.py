"""A result record's own fields, listed once for the station's store and the hub's results export.

The station's store takes these keys from a record (`device/store/store.py`); the hub's `results.csv`
(`hub/dashboard.py`) shows them with the hub's own columns (device, receipt times, the latest review)
around them, in this order, so a field added here reaches both.
"""

from __future__ import annotations

#: The keys a station copies from a result into its `results` row, in the export's order.
RECORD_FIELDS: tuple[str, ...] = (
    "sample_id",
    "source",
    "kind",
    "review_of",
    "label",
    "confidence",
    "abstained",
    "reason",
    "image_sha256",
    "heatmap_sha256",
    "filename",
    "um_per_px",
    "profile",
    "reviewer",
    "comment",
)

#: Record fields the hub's results export leaves out: a station's own files (the hub keeps images by
#: sha256, never a station's file name or heatmap).
NOT_IN_RESULTS_CSV = frozenset({"heatmap_sha256", "filename"})

#: The hub's own columns of `results.csv`, each group placed after the record field it follows
#: (None: before the first field).
_HUB_COLUMNS_AFTER: dict[str | None, tuple[str, ...]] = {
    None: ("id", "device", "seq"),
    "sample_id": ("captured_at", "received_at", "clock_skew_s", "skew_flag"),
    "image_sha256": ("probabilities", "time_flag"),
    "comment": ("reviewed_label", "disclaimer"),
}


def _results_csv_columns() -> list[str]:
    columns = list(_HUB_COLUMNS_AFTER[None])
    for name in RECORD_FIELDS:
        if name not in NOT_IN_RESULTS_CSV:
            columns.append(name)
        columns.extend(_HUB_COLUMNS_AFTER.get(name, ()))
    return columns


#: The header of the hub's `results.csv`; hub/dashboard.py writes each row in this order.
RESULTS_CSV_COLUMNS: list[str] = _results_csv_columns()
