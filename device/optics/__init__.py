"""Optics: what stands between a camera frame and a model's input.

Physical scale (µm/px) and colour (the smear's bright background as a white reference): a model was trained
at one scale and colour, a station's camera has its own. See DEVELOPERS.md, "Contract 1".
"""
