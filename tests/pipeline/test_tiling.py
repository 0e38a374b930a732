"""Tiling geometry: coverage, overlap, model scale, alignment, and tile budget."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pipeline.tiling import MAX_SCALE, MIN_SCALE, axis_spans, plan_tiles


def check_axis(length: int, size: int, overlap: int, align: int) -> list[tuple[int, int]]:
    spans = axis_spans(length, size, overlap, align)
    assert spans[0][0] == 0 and spans[-1][1] == length
    for a, b in spans:
        assert 0 <= a < b <= length
        n = b - a
        if length <= math.floor(MAX_SCALE * size):
            assert n == length  # one tile, never upscaled
        else:
            assert MIN_SCALE * size <= n <= MAX_SCALE * size, (spans, n)
    for (a0, a1), (b0, b1) in zip(spans, spans[1:], strict=False):
        assert b0 > a0 and b1 > a1, spans  # strictly advancing
        assert a1 - b0 >= overlap, (spans, overlap)  # neighbours overlap enough
    return spans


@settings(max_examples=400, deadline=None)
@given(
    length=st.integers(1, 70000),
    size=st.integers(32, 2048),
    overlap_frac=st.floats(0, 0.5),
    align=st.sampled_from([1, 8, 16]),
)
def test_axis_spans_cover_overlap_and_keep_scale(length, size, overlap_frac, align):
    overlap = int(size * overlap_frac * 0.5)
    check_axis(length, size, overlap, align)


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 20000), size=st.integers(64, 1200))
def test_origins_are_aligned_when_there_is_room(length, size):
    spans = axis_spans(length, size, 64, 16)
    cap = math.floor(MAX_SCALE * size)
    if cap - 2 * 15 - 64 >= 1 and cap - 15 >= size:
        assert all(a % 16 == 0 for a, _ in spans)


def test_training_slide_costs_four_tiles_of_model_scale():
    tiles = plan_tiles(1920, 1440, 960, 720, 128, align=16)
    assert len(tiles) == 4  # SAHI's defaults would spend 10 here; the budget is 6
    for t in tiles:
        assert 0.9 * 960 <= t.width <= 1.15 * 960
        assert 0.9 * 720 <= t.height <= 1.15 * 720


@pytest.mark.parametrize(
    "w,h", [(1, 1), (32, 32), (959, 719), (960, 720), (1104, 828), (3196, 1737), (65535, 1)]
)
def test_plan_tiles_cover_every_pixel_once_or_more(w, h):
    tiles = plan_tiles(w, h, 960, 720, 128, align=16)
    xs = sorted({(t.x0, t.x1) for t in tiles})
    ys = sorted({(t.y0, t.y1) for t in tiles})
    assert len(tiles) == len(xs) * len(ys)
    assert [t.index for t in tiles] == list(range(len(tiles)))
    check_axis(w, 960, 128, 16)
    check_axis(h, 720, 128, 16)


def test_small_image_is_one_tile_without_upscaling():
    (t,) = plan_tiles(300, 200, 960, 720, 128)
    assert (t.x0, t.y0, t.x1, t.y1) == (0, 0, 300, 200)


def test_rejects_nonsense():
    with pytest.raises(ValueError):
        axis_spans(0, 960, 128)
    with pytest.raises(ValueError):
        axis_spans(100, 0, 10)
