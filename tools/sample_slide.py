"""Writes the sample slide the README's examples send, ``samples/slide.jpg``.

The real slide photographs are not ours to redistribute, so the repository carries a
synthetic one instead: an H&E-like field with ``CELLS`` eosinophils at known places among
red blood cells, lymphocytes and stromal nuclei (the generator of the tests,
``tests/synthetic.py``).  It is deterministic, so running this again rewrites the same
picture; the tests check that the committed file is still what it makes.

    .venv/bin/python tools/sample_slide.py [OUT.jpg]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the slide generator lives with the tests

from synthetic import make_slide, random_cells  # noqa: E402

SAMPLE = REPO / "samples" / "slide.jpg"
WIDTH, HEIGHT = 1280, 960
CELLS = 24
DIAMETER_PX = 50.0
SEED = 14
QUALITY = 85


def render() -> np.ndarray:
    """The sample slide's pixels (H x W x 3, uint8)."""
    cells = random_cells(WIDTH, HEIGHT, CELLS, diameter=DIAMETER_PX, seed=SEED, min_gap=8)
    return make_slide(WIDTH, HEIGHT, cells, seed=SEED)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=SAMPLE)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render()).save(args.out, format="JPEG", quality=QUALITY)
    print(f"{args.out}: {WIDTH}x{HEIGHT}, {CELLS} eosinophils")
    return 0


if __name__ == "__main__":
    sys.exit(main())
