"""Folder-of-class-folders datasets as the station reads them: scanning and grouping (`folders`), a
dataset's declared labels (`labels`: labels.json), numpy metrics (`metrics`) and the field results on
such a folder (`evaluation`)."""
