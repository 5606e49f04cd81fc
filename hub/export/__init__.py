"""Training data export: reviewed images as a folder of label folders (`dataset.py`: selection and
writing), from the command line (`cli.py`, `smearscope-hub export-dataset`) or the dashboard
(`routes.py`, `/export/dataset`)."""
