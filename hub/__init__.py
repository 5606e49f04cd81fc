"""The central hub devices sync to (Flask + SQLAlchemy 2 + Alembic); see hub/README.md."""

import sys

# pip refuses other Pythons (requires-python); this says so when a checkout is run directly
if sys.version_info < (3, 11):  # noqa: UP036 - the check is for interpreters older than the target
    raise ImportError(
        f"smearscope-hub needs Python 3.11-3.13, not {sys.version.split()[0]}; on JetPack 6 install "
        "python3.11 (docs/hardware.md: Operating system and Python)"
    )
