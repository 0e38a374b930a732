"""One-to-one box matching at IoU >= 0.5, against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.pipeline.matching import iou_matrix, match_boxes


def test_iou_by_hand():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 5]])
    # same box 1; half shifted: 50 / 150; apart 0; inside, half the area: 50 / 100
    assert iou_matrix(a, b)[0].tolist() == pytest.approx([1.0, 1 / 3, 0.0, 0.5])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 4)


def test_each_box_is_matched_once_best_iou_first():
    a = np.array([[0, 0, 10, 10], [1, 0, 11, 10]])  # two close boxes
    b = np.array([[1, 0, 11, 10]])  # one box, identical to a[1], IoU 9/11 with a[0]
    found = match_boxes(a, b)
    assert [(i, j) for i, j, _ in found.pairs] == [(1, 0)]
    assert found.only_a == [0] and found.only_b == []


def test_below_half_is_no_match():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10]])  # IoU 1/3
    found = match_boxes(a, b)
    assert found.pairs == [] and found.only_a == [0] and found.only_b == [0]
    exactly_half = match_boxes(a, np.array([[0, 0, 10, 5]]))
    assert len(exactly_half.pairs) == 1  # IoU >= 0.5 counts
    empty = match_boxes(np.zeros((0, 4)), np.zeros((0, 4)))
    assert (empty.pairs, empty.only_a, empty.only_b) == ([], [], [])
