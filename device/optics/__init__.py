"""Optics: everything between the microscope and the models (scale, colour, calibration profiles,
tiling)."""
