"""Optics: what a frame shows and how it becomes a model's input.

Physical scale (µm/px) from the red cells, the scale check, model-size tiles, nuclei, the field rule and
classifier, calibration measurements and renderings at another scale. A model
was trained at one scale and colour, a station's camera has its own: the calibration profiles
(`device/camera/profiles.py`) say what a station's camera + objective gives, and the white reference is
`device/colour.py`. See DEVELOPERS.md, "Contract 1" and "Calibration profiles".
"""
