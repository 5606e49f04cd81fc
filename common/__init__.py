"""What the station and the hub must say, write and check the same way: the safety wording, the CSV
cells a spreadsheet opens without running anything, a bundle's release order and signature check, the
result record's fields. Standard library and `cryptography` only (both sides depend on it); `device/`
and `hub/` both import it, it imports neither."""
