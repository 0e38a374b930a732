"""Tests of gateway.detector.filters against the scipy.ndimage calls it replaces.

scipy is a development requirement only: here it is the oracle.  Inputs are drawn with
Hypothesis (shapes from empty to a few dozen pixels, sparse to full masks, blobs like the
stain masks the detector labels) and generated with numpy from the drawn seed.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import modules_loaded_by
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from gateway.detector import filters

sides = st.integers(0, 40)
densities = st.sampled_from([0.0, 0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98, 1.0])
seeds = st.integers(0, 2**32 - 1)
FULL = np.ones((3, 3), bool)


def random_mask(h: int, w: int, density: float, seed: int, blobs: bool) -> np.ndarray:
    """Salt-and-pepper pixels, or (``blobs``) round objects of a few pixels that touch
    and merge, as a thresholded smoothed noise field gives."""
    rng = np.random.default_rng(seed)
    if not blobs or h == 0 or w == 0:
        return rng.random((h, w)) < density
    field = ndimage.gaussian_filter(rng.random((h, w)), 1.5, mode="reflect")
    cut = np.quantile(field, 1.0 - density) if 0 < density < 1 else (2.0 if density == 0 else -1.0)
    return field >= cut


masks = st.builds(random_mask, sides, sides, densities, seeds, st.booleans())


# -- gaussian_filter -------------------------------------------------------------------


@settings(max_examples=150)
@given(
    h=sides,
    w=sides,
    sigma=st.floats(0.2, 8.0),
    truncate=st.sampled_from([3.0, 4.0]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=seeds,
)
@example(h=0, w=5, sigma=1.0, truncate=3.0, dtype=np.float32, seed=0)
@example(h=1, w=1, sigma=3.5, truncate=3.0, dtype=np.float32, seed=0)
@example(h=30, w=2, sigma=0.1, truncate=3.0, dtype=np.float64, seed=0)
def test_gaussian_filter_matches_scipy(h, w, sigma, truncate, dtype, seed):
    a = np.random.default_rng(seed).random((h, w)).astype(dtype)
    got = filters.gaussian_filter(a, sigma, truncate=truncate)
    want = ndimage.gaussian_filter(a, sigma, mode="constant", truncate=truncate)
    assert got.dtype == want.dtype and got.shape == want.shape
    # a few float ulps at most: each pass rounds to the input dtype, as scipy does
    ulp = float(np.finfo(dtype).eps) * 4
    np.testing.assert_allclose(got, want, rtol=ulp, atol=ulp * 1e-3)


def test_gaussian_filter_keeps_a_unit_impulse_sum_and_symmetry():
    a = np.zeros((41, 41), np.float64)
    a[20, 20] = 1.0
    out = filters.gaussian_filter(a, 3.0)
    assert out.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(out, out[::-1, ::-1])
    assert out[20, 20] == out.max()
    assert out[20, 20 + 10] == 0.0  # radius int(3 * 3 + 0.5) = 9


# -- maximum_filter --------------------------------------------------------------------


@settings(max_examples=150)
@given(
    h=sides,
    w=sides,
    size=st.integers(1, 15),
    cval=st.sampled_from([-1.0, 0.0, 0.5]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=seeds,
)
@example(h=1, w=1, size=11, cval=-1.0, dtype=np.float32, seed=0)
@example(h=0, w=7, size=3, cval=-1.0, dtype=np.float32, seed=0)
def test_maximum_filter_matches_scipy(h, w, size, cval, dtype, seed):
    rng = np.random.default_rng(seed)
    # few distinct values: plateaus, as the smoothed maps have where they saturate
    a = (rng.integers(0, 5, (h, w)) / 4).astype(dtype)
    got = filters.maximum_filter(a, size, cval)
    want = ndimage.maximum_filter(a, size=size, mode="constant", cval=cval)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


# -- label and center_of_mass ----------------------------------------------------------


@settings(max_examples=200)
@given(mask=masks, connectivity=st.sampled_from([4, 8]))
def test_label_matches_scipy(mask, connectivity):
    structure = FULL if connectivity == 8 else None
    want, n_want = ndimage.label(mask, structure=structure)
    got, n_got = filters.label(mask, connectivity)
    assert n_got == n_want
    assert got.dtype == want.dtype == np.int32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_label_follows_long_winding_objects(connectivity):
    """A spiral and a comb: one object whose runs join only through many steps."""
    spiral = np.zeros((41, 41), bool)
    top, left, bottom, right = 0, 0, 40, 40
    while top <= bottom and left <= right:
        spiral[top, left : right + 1] = True
        spiral[top : bottom + 1, right] = True
        spiral[bottom, left : right + 1] = True
        spiral[top + 2 : bottom + 1, left] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
        if top <= bottom:
            spiral[top, left - 2 : left] = True
    comb = np.zeros((30, 61), bool)
    comb[1:, ::2] = True
    comb[0, :] = True
    diagonal = np.eye(25, dtype=bool) | np.eye(25, k=1, dtype=bool)[::-1]
    for mask in (spiral, comb, diagonal, ~spiral):
        structure = FULL if connectivity == 8 else None
        want, n_want = ndimage.label(mask, structure=structure)
        got, n_got = filters.label(mask, connectivity)
        assert n_got == n_want
        np.testing.assert_array_equal(got, want)


def test_label_rejects_other_connectivities():
    with pytest.raises(ValueError):
        filters.label(np.ones((2, 2), bool), 6)


@settings(max_examples=100)
@given(mask=masks)
def test_center_of_mass_matches_scipy(mask):
    lab, n = ndimage.label(mask, structure=FULL)
    got = filters.center_of_mass(lab, n)
    assert got.shape == (n, 2) and got.dtype == np.float64
    if n:
        want = np.asarray(ndimage.center_of_mass(mask, lab, np.arange(1, n + 1)))
        np.testing.assert_array_equal(got, want.reshape(-1, 2))


# -- binary_opening and distance_transform_edt -----------------------------------------


@settings(max_examples=200)
@given(mask=masks)
def test_binary_opening_matches_scipy(mask):
    want = ndimage.binary_opening(mask, structure=np.ones((2, 2), bool))
    got = filters.binary_opening(mask)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, want)


@settings(max_examples=200)
@given(mask=masks)
@example(mask=np.ones((1, 1), bool))
@example(mask=np.ones((5, 9), bool))
@example(mask=np.ones((7, 1), bool))
@example(mask=np.zeros((0, 4), bool))
@example(mask=np.zeros((3, 3), bool))
def test_distance_transform_edt_matches_scipy(mask):
    want = ndimage.distance_transform_edt(mask)
    got = filters.distance_transform_edt(mask)
    assert got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(60, 90), (90, 60), (1, 50), (50, 1), (3, 400), (400, 3)])
def test_distance_transform_edt_far_from_any_zero(shape):
    """Large stained areas: the only zero in a corner or at a side, or a frame of zeros
    (the farthest pixels are half or all of the image away)."""
    h, w = shape
    frame = np.ones(shape, bool)
    frame[[0, -1], :] = False
    frame[:, [0, -1]] = False
    masks = [frame]
    for corner in [(0, 0), (h - 1, w - 1), (h // 2, 0)]:
        mask = np.ones(shape, bool)
        mask[corner] = False
        masks.append(mask)
    for mask in masks:
        np.testing.assert_array_equal(
            filters.distance_transform_edt(mask), ndimage.distance_transform_edt(mask)
        )


# -- the detector runs without scipy ---------------------------------------------------


@pytest.mark.process
def test_the_detector_runs_without_importing_scipy():
    loaded = modules_loaded_by(
        "import numpy as np\n"
        "from gateway.detector import detect\n"
        "img = np.full((200, 300, 3), 230, np.uint8)\n"
        "img[80:120, 100:140] = (200, 90, 150)\n"
        "img[95:105, 115:125] = (50, 20, 115)\n"
        "detect(img)\n"
        "detect(img, 40.0)\n"
    )
    assert "gateway.detector._impl" in loaded
    assert not {m for m in loaded if m.split(".")[0] == "scipy"}
