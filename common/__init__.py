"""What the station and the hub must say and write the same way: the safety wording and the CSV cells a
spreadsheet opens without running anything. Standard library only; `device/` and `hub/` both import it,
it imports neither."""
