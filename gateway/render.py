"""Drawing detections on a slide photograph (shared by tools, the CLI and the API).

Pillow only, no fonts to load from disk: the default bitmap font is used (scaled up
when Pillow supports it) so the function works inside the Cloud Function image.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from gateway.codecs.geojson import PALETTE

BOX_COLOUR = PALETTE[0]  # the colour of the first label in QuPath too
TEXT_COLOUR = (255, 255, 255)
TEXT_BACKGROUND = (0, 0, 0)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def draw_detections(
    img: Image.Image,
    boxes_xyxy: Sequence[Sequence[float]],
    scores: Sequence[float],
    *,
    count_text: bool = True,
    copy: bool = True,
) -> Image.Image:
    """Return a copy of ``img`` (as RGB) with one rectangle per box and its score.

    ``boxes_xyxy`` are [x0, y0, x1, y1] in pixels of ``img``; ``scores`` in 0..1 are
    written above each box.  With ``count_text`` the number of boxes is written in the
    top-left corner.  The caller chooses which boxes to pass (e.g. score >= 0.3).
    ``copy=False`` draws on an RGB ``img`` itself: a slide of 33 MP takes 130 MB a copy.
    """
    if copy or img.mode != "RGB":
        out = img.convert("RGB")
        if out is img:
            out = img.copy()
    else:
        out = img
    draw = ImageDraw.Draw(out)
    w, h = out.size
    line = max(2, round(min(w, h) / 400))
    small = _font(max(10, round(min(w, h) / 90)))
    boxes = [tuple(float(v) for v in b) for b in boxes_xyxy]
    for (x0, y0, x1, y1), s in zip(boxes, scores, strict=True):
        draw.rectangle((x0, y0, x1, y1), outline=BOX_COLOUR, width=line)
        draw.text(
            (x0 + line, max(0.0, y0 - line)),
            f"{float(s):.2f}",
            fill=BOX_COLOUR,
            font=small,
            anchor="lb" if y0 > 12 else "lt",
        )
    if count_text:
        big = _font(max(14, round(min(w, h) / 30)))
        text = f"eosinophils: {len(boxes)}"
        bbox = draw.textbbox((0, 0), text, font=big)
        pad = max(4, line * 2)
        draw.rectangle((0, 0, bbox[2] + 2 * pad, bbox[3] + 2 * pad), fill=TEXT_BACKGROUND)
        draw.text((pad, pad), text, fill=TEXT_COLOUR, font=big)
    return out
