"""Backing up and restoring the hub's database, which holds everything the hub keeps (`database.py`),
and the `smearscope-hub backup|restore` commands (`cli.py`)."""
