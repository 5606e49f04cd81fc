"""The cell classifier's data: crops of single cells at one physical scale and one level of detail,
from the B-ALL fields and the PBC normal cells, their labels (with each label's malignancy declared in
the dataset, `labels.json`) and the cross-lab evaluation. Guide: docs/cells-training.md."""
