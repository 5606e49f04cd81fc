"""Model updates flowing down to the stations: signed bundles published by an admin (`updates.py`,
checked by `bundle_sig.py`), their tables (`tables.py`), the stations' API (`api.py`), the dashboard's
`/models` page (`dashboard.py`) and the `keys`/`models`/`devices set-group` commands (`cli.py`)."""
