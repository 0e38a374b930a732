"""Render eosinophil detections on a slide photograph.

Usage::

    .venv/bin/python tools/render_detections.py IN.jpg OUT.jpg [--threshold 0.3]
        [--diameter PX]

Draws a box (with its score) for every detection at or above the threshold and the
count in the top-left corner, using :func:`gateway.render.draw_detections`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from gateway.detector import detect  # noqa: E402
from gateway.render import draw_detections  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument(
        "--diameter",
        type=float,
        default=None,
        help="cell diameter in px (default: estimated from the image)",
    )
    args = ap.parse_args(argv)
    img = Image.open(args.input).convert("RGB")
    det = detect(np.asarray(img), args.diameter)
    keep = det.scores >= args.threshold
    out = draw_detections(img, det.boxes[keep], det.scores[keep])
    out.save(args.output)
    print(f"{int(keep.sum())} eosinophils (score >= {args.threshold}) -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
