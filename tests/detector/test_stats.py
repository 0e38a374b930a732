"""``gateway.detector.stats`` gives numpy's own order statistics to the bit, and a whole
detection (tiling and merge included) runs without importing ``numpy.ma``."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import modules_loaded_by
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.detector import stats
from gateway.pipeline.merge import _distinct

seeds = st.integers(0, 2**32 - 1)
sizes = st.integers(1, 300)
scales = st.sampled_from([1.0, 3.0, 765.0, 1e4])


def _values(n: int, seed: int, scale: float, dtype, rounded: bool) -> np.ndarray:
    a = np.random.default_rng(seed).random(n) * scale
    if rounded:  # ties, as clipped maps and pixel sums have
        a = np.round(a, 1)
    return a.astype(dtype)


def _same(got, want) -> None:
    assert type(got) is type(want)
    assert got == want  # to the bit: the detector's thresholds compare with these


@settings(max_examples=300)
@given(n=sizes, seed=seeds, scale=scales, rounded=st.booleans(), p=st.sampled_from([5, 50, 95]))
def test_percentile_is_numpys(n, seed, scale, rounded, p):
    a = _values(n, seed, scale, np.float32, rounded)
    _same(stats.percentile(a, p), np.percentile(a, p))


@settings(max_examples=300)
@given(n=sizes, seed=seeds, scale=scales, rounded=st.booleans(), q=st.sampled_from([0.25, 0.5]))
def test_quantile_is_numpys(n, seed, scale, rounded, q):
    a = _values(n, seed, scale, np.float64, rounded)
    _same(stats.quantile(a, q), np.quantile(a, q))


@settings(max_examples=300)
@given(n=sizes, seed=seeds, scale=scales, rounded=st.booleans())
def test_median_is_numpys(n, seed, scale, rounded):
    a = _values(n, seed, scale, np.float64, rounded)
    _same(stats.median(a), np.median(a))


def test_no_values_is_an_error_not_a_value():
    for fn in (lambda a: stats.quantile(a, 0.5), stats.median):
        with pytest.raises(ValueError):
            fn(np.zeros(0))


@given(st.lists(st.integers(-5, 5), max_size=30))
def test_distinct_of_a_sorted_array_is_numpys_unique(values):
    a = np.sort(np.asarray(values, dtype=np.int64))
    np.testing.assert_array_equal(_distinct(a), np.unique(a))


@pytest.mark.process
def test_a_slide_is_detected_without_importing_numpy_ma():
    """The in-process command line on the sample slide: decode, tiles, detector, merge."""
    loaded = modules_loaded_by(
        "import runpy, sys\n"
        "sys.argv = ['gateway', 'detect', 'samples/slide.jpg']\n"
        "try:\n"
        "    runpy.run_module('gateway', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
    )
    assert {"gateway.pipeline.merge", "gateway.detector.scale"} <= loaded
    assert "numpy.ma" not in loaded
