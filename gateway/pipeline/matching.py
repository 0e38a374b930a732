"""Two detectors' boxes on the same slide matched one to one, as detection benchmarks do.

Pairs are taken greedily by IoU, highest first, each box in one pair at most, and a pair
counts only at ``IoU >= min_iou`` (0.5 by default).  Pure functions over arrays of
``[x0, y0, x1, y1]`` boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_IOU = 0.5


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4): (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclass(frozen=True)
class Matching:
    pairs: list[tuple[int, int, float]]  # (index in a, index in b, IoU), best IoU first
    only_a: list[int]  # boxes of a that no box of b matched, in order
    only_b: list[int]


def match_boxes(a: np.ndarray, b: np.ndarray, min_iou: float = MIN_IOU) -> Matching:
    """One-to-one matching of ``a``'s boxes with ``b``'s, greedy by IoU."""
    ious = iou_matrix(a, b)
    n, m = ious.shape
    pairs: list[tuple[int, int, float]] = []
    if n and m:
        rows, cols = np.nonzero(ious >= min_iou)
        order = np.lexsort((cols, rows, -ious[rows, cols]))  # IoU down, then index: stable
        used_a, used_b = set(), set()
        for k in order:
            i, j = int(rows[k]), int(cols[k])
            if i in used_a or j in used_b:
                continue
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j, float(ious[i, j])))
    matched_a = {i for i, _, _ in pairs}
    matched_b = {j for _, j, _ in pairs}
    return Matching(
        pairs,
        [i for i in range(n) if i not in matched_a],
        [j for j in range(m) if j not in matched_b],
    )
