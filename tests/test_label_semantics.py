"""Which labels count as malignant: declared by the bundle, else known names, else malignant (refer)."""

from __future__ import annotations

from convert.bundle import make_labels
from device.slides.summary import is_malignant, summarise


def test_known_datasets_declare_malignancy():
    labels = {lb.id: lb.malignant for lb in make_labels(["Benign", "Early", "ALL", "HEM", "L3", "Blob"])}
    assert labels == {"Benign": False, "Early": True, "ALL": True, "HEM": False, "L3": True, "Blob": None}


def test_undeclared_labels_fall_back_to_names_and_unknown_means_refer():
    assert is_malignant("HEM", {}) is False
    assert is_malignant("Benign", {}) is False
    assert is_malignant("Blob", {}) is True  # unknown: never let it pass as benign
    assert is_malignant("Benign", {"Benign": True}) is True  # a bundle's declaration wins


def test_cnmc_slide_without_malignant_fields_is_not_suspicious():
    fields = [{"id": str(i), "label": "HEM", "abstained": False} for i in range(12)]
    out = summarise(fields, {"ALL": True, "HEM": False})
    assert out["call"] == "no_malignant_seen"
    fields += [{"id": f"m{i}", "label": "ALL", "abstained": False} for i in range(4)]
    assert summarise(fields, {"ALL": True, "HEM": False})["call"] == "suspicious"
