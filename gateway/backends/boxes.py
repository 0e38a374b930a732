"""The box layouts detection models answer in, turned into the tile pixels the merge reads.

Exports disagree on both the order of the coordinates and their unit: the TF Object
Detection API and AutoML answer ``[ymin, xmin, ymax, xmax]`` normalized to the image,
YOLO-style exports ``[x0, y0, x1, y1]`` in pixels of the image they were sent.  A service
names its model's layout once; everything after this conversion is layout-free.
"""

from __future__ import annotations

import numpy as np

BOX_FORMATS = ("yxyx_normalized", "xyxy_normalized", "xyxy_pixels")


def to_tile_pixels(boxes: np.ndarray, box_format: str, width: int, height: int) -> np.ndarray:
    """``boxes`` (N, 4) in ``box_format`` as [x0, y0, x1, y1] in pixels of a ``width`` x
    ``height`` tile, as float64 (a new array: the model's answer is never written to)."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have the shape (N, 4), not {b.shape}")
    if box_format == "yxyx_normalized":
        return np.stack([b[:, 1] * width, b[:, 0] * height, b[:, 3] * width, b[:, 2] * height], 1)
    if box_format == "xyxy_normalized":
        return b * np.array([width, height, width, height], dtype=np.float64)
    if box_format == "xyxy_pixels":
        return b.copy()
    raise ValueError(f"unknown box format {box_format!r} (one of {', '.join(BOX_FORMATS)})")
