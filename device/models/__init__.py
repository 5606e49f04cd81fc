"""The models a station runs: the bundle format and its checks (`bundle`, `bundle_archive`, `signing`),
the interpreter and one model (`runtime`, `model`), the ensemble that votes and abstains (`ensemble`),
and the models directory with install and rollback (`modelstore`)."""
