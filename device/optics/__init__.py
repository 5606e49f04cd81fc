"""Optics: colour reference, physical scale, calibration profiles, tiling (issue 10)."""
