"""Alembic migrations for the hub schema (shipped inside the package)."""
