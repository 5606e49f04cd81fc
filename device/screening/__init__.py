"""Screening: one camera frame or upload → its white cells → one field result, for cell bundles.

    frame ─► PreparedFrame (white reference, scale, red-cell scale check)      `prepare.py`
          ─► DetectedCells (every nucleated body, `device.cells.detect`)         `screen.py`
          ─► ClassifiedCells (each white cell's crop → ensemble → decision)      `classify.py`
          ─► FieldCells (per-cell records, the field's differential, field line,
                         the record's label by the rule in `result.py`)          `result.py`
          ─► one stored record with its cells (camera and uploads alike)        `writer.py`

Each stage is a frozen dataclass (`stages.py`). `screen_frame(rgb, scale, ensemble, settings)` runs the
whole path; the live pipeline runs the stages on its own threads. This package imports nothing of
`device.pipeline` or `device.web`. A screening aid for trained staff, not a diagnosis.
"""
