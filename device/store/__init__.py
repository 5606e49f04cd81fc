"""Local store: SQLite (WAL) rows + JPEG files by hash. See DEVELOPERS.md for the schema."""
