"""The agreement figures against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from gateway.usage.agreement import (
    agreement_rate,
    bland_altman,
    cohens_kappa,
    cutoff_crossings,
    lin_ccc,
    median,
    pooled_f1,
)

# Counts of five slides by a reference (a) and a candidate (b).
A = [10, 20, 30, 40, 50]
B = [12, 18, 33, 41, 56]
# b - a = 2, -2, 3, 1, 6: bias 2; squared deviations 0, 16, 1, 1, 16 = 34; sd = sqrt(34/4)


def test_bland_altman_by_hand():
    ba = bland_altman(A, B)
    sd = math.sqrt(8.5)
    assert ba.n == 5
    assert ba.bias == pytest.approx(2.0)
    assert ba.sd == pytest.approx(sd)
    assert ba.lower == pytest.approx(2 - 1.96 * sd)  # -3.714...
    assert ba.upper == pytest.approx(2 + 1.96 * sd)  # 7.714...
    assert ba.outside == 0


def test_bland_altman_counts_the_slides_outside():
    # differences 0 x 9 and 10: bias 1, sd sqrt(90/9) = sqrt(10) = 3.162: limits -5.20..7.20
    a = [5] * 10
    b = [5] * 9 + [15]
    ba = bland_altman(a, b)
    assert ba.bias == pytest.approx(1.0)
    assert ba.sd == pytest.approx(math.sqrt(10))
    assert ba.outside == 1


def test_bland_altman_of_too_few_slides():
    assert bland_altman([], []).bias is None
    one = bland_altman([3], [5])
    assert (one.bias, one.sd, one.lower, one.outside) == (2.0, None, None, 0)


def test_lin_ccc_by_hand():
    # means 30 and 32; var_a = 1000/5 = 200; var_b: deviations -20,-14,1,9,24 -> 400+196+1+81
    # +576 = 1254, /5 = 250.8; cov: (-20)(-20)+(-10)(-14)+0+10*9+20*24 = 400+140+0+90+480
    # = 1110, /5 = 222; ccc = 444 / (200 + 250.8 + 4) = 444 / 454.8
    assert lin_ccc(A, B) == pytest.approx(444 / 454.8)
    assert lin_ccc([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert lin_ccc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert lin_ccc([4, 4], [4, 4]) is None


def test_pooled_f1_by_hand():
    # 18 matched, 2 only in a, 4 only in b: 36 / (36 + 6)
    assert pooled_f1(18, 2, 4) == pytest.approx(36 / 42)
    assert pooled_f1(0, 0, 0) is None
    assert pooled_f1(0, 3, 0) == 0.0


def test_cutoff_crossings():
    # at 15: (10, 12) both below; (14, 15) crosses; (15, 14) crosses; (20, 30) both above
    assert cutoff_crossings([10, 14, 15, 20], [12, 15, 14, 30], 15) == 2
    assert cutoff_crossings(A, B, 15) == 0


def test_cohens_kappa_by_hand():
    # 10 images: 4 yes/yes, 1 yes/no, 2 no/yes, 3 no/no; p_o = 0.7
    # a: 5 yes 5 no; b: 6 yes 4 no; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = 0.2/0.5 = 0.4
    a = ["yes"] * 5 + ["no"] * 5
    b = ["yes"] * 4 + ["no"] + ["yes"] * 2 + ["no"] * 3
    assert agreement_rate(a, b) == pytest.approx(0.7)
    assert cohens_kappa(a, b) == pytest.approx(0.4)
    assert cohens_kappa(["x", "x"], ["x", "x"]) is None
    assert cohens_kappa([], []) is None


def test_medians_and_pairs():
    assert median([3, 1, 2]) == 2.0
    assert median([4, 1, 3, 2]) == 2.5
    assert median([]) is None
    with pytest.raises(ValueError):
        bland_altman([1], [1, 2])
