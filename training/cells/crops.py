"""The crop dataset's geometry: one physical scale, one input size, one level of detail.

Two labs, two cameras: the B-ALL fields hold ~0.48 µm per pixel and are soft, the PBC cells ~0.11
µm/px and sharp. At one physical scale sharpness alone would tell the labs apart, so every crop passes
through the coarse pitch (`CropSpec.pitch_um`) before it is brought to the model's input size. The crop
itself is the station's, `device.cells.crop.model_input`; this module holds its parameters and where the
square lies in the source image.
"""

from __future__ import annotations

from dataclasses import dataclass

#: µm per pixel of the B-ALL fields at their own 224 px size (the shipped bundles' 0.37255 at 288 px).
BALL_UM_PER_PX = 0.479
#: µm per pixel of the PBC images, measured from their red cells (device.optics.scale, 7.5 µm red cells:
#: median 0.107-0.109 over confident images of two types).
PBC_UM_PER_PX = 0.108


@dataclass(frozen=True)
class CropSpec:
    side_um: float = 24.0  # a monocyte (~15-20 µm) whole, with a margin; a lymphocyte with its neighbours
    size: int = 96  # model input side, px
    pitch_um: float = BALL_UM_PER_PX  # every crop passes through this pitch (the softer source's)

    @property
    def um_per_px(self) -> float:
        """µm per pixel at the model's input size (what the bundle declares)."""
        return self.side_um / self.size


def crop_box(cx: float, cy: float, um_per_px: float, side_um: float) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the square of `side_um` centred on (cx, cy), in image pixels."""
    side = side_um / um_per_px
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    s = int(round(side))
    return x0, y0, x0 + s, y0 + s


def leaves_image(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> bool:
    """Whether the square `box` (x0, y0, x1, y1) leaves an image of `shape` (its outside is reflected)."""
    x0, y0, x1, y1 = box
    h, w = shape[:2]
    return x0 < 0 or y0 < 0 or x1 > w or y1 > h
