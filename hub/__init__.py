"""The central hub devices sync to (Flask + SQLAlchemy 2 + Alembic); see hub/README.md."""
