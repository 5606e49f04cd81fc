"""A record's counted cells on the hub: checked and stored once with the station's later reviews
(`store`), the hub's count beside the station's call (`counts`), what a label is (`labels`), squares cut
around a cell (`crop`) and the record, sample and CSV pages (`pages`)."""
