"""The sparse (overlapping pairs only) merge gives exactly the dense reference's answer."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.backends.base import TileDetections
from gateway.pipeline import merge as M
from gateway.pipeline.tiling import plan_tiles


def dense_merge(tiles, per_tile, width, height, same_cell_iou=M.SAME_CELL_IOU) -> M.Merged:
    """The merge written with full pairwise matrices: the specification the fast one meets."""
    B, S, C, T, margin, _ = M._gather(tiles, per_tile, width, height)
    if len(S) == 0:
        return M.empty()
    whole = margin > M.EDGE_EPS
    keep = whole.copy()
    cand = np.flatnonzero(whole & M._shared_region_mask(B, tiles, T))
    if len(cand) > 1:
        order = cand[np.lexsort((-S[cand], -margin[cand]))]
        iou, ios = M._pairwise_iou_ios(B[order], B[order])
        same = ((iou >= same_cell_iou) | (ios >= M.SAME_CELL_IOS)) & (
            T[order][:, None] != T[order][None, :]
        )
        alive = np.ones(len(order), dtype=bool)
        for i in range(len(order)):
            if alive[i]:
                row = same[i]
                row[: i + 1] = False
                alive &= ~row
        keep[order[~alive]] = False
    frag = np.flatnonzero(~whole)
    eb, es, ec = [], [], []
    if len(frag):
        kept_idx = np.flatnonzero(keep)
        if len(kept_idx):
            _, ios = M._pairwise_iou_ios(B[frag], B[kept_idx])
            frag = frag[~(ios >= M.FRAGMENT_IOS).any(axis=1)]
        if len(frag):
            order = frag[np.argsort(-S[frag], kind="stable")]
            _, ios = M._pairwise_iou_ios(B[order], B[order])
            linked = (ios >= M.FRAGMENT_IOS) & (T[order][:, None] != T[order][None, :])
            group = np.full(len(order), -1)
            for i in range(len(order)):
                if group[i] < 0:
                    members = np.flatnonzero(linked[i] & (group < 0))
                    group[i] = i
                    group[members] = i
            for g in np.unique(group):
                m = order[group == g]
                eb.append([B[m, 0].min(), B[m, 1].min(), B[m, 2].max(), B[m, 3].max()])
                es.append(S[m].max())
                ec.append(C[m[0]])
    boxes, scores, classes = B[keep], S[keep], C[keep]
    if eb:
        boxes = np.concatenate([boxes, np.asarray(eb, dtype=np.float64)])
        scores = np.concatenate([scores, np.asarray(es, dtype=np.float64)])
        classes = np.concatenate([classes, np.asarray(ec, dtype=np.int64)])
    return M.sort_by_score(
        M.Merged(boxes.astype(np.float32), scores.astype(np.float32), classes.astype(np.int32))
    )


def random_views(seed: int, n_cells: int, width: int, height: int, big: bool = False):
    """Cells seen by every tile they touch (cut at tile edges), jittered, plus noise boxes."""
    rng = np.random.default_rng(seed)
    tiles = plan_tiles(width, height, 960, 720, 128, align=16)
    cx, cy = rng.uniform(0, width, n_cells), rng.uniform(0, height, n_cells)
    d = rng.uniform(20, 300 if big else 70, n_cells)
    cells = np.stack([cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2], axis=1)
    per_tile = []
    for t in tiles:
        x0, x1 = np.clip(cells[:, 0], t.x0, t.x1), np.clip(cells[:, 2], t.x0, t.x1)
        y0, y1 = np.clip(cells[:, 1], t.y0, t.y1), np.clip(cells[:, 3], t.y0, t.y1)
        seen = (x1 - x0 > 1) & (y1 - y0 > 1)
        b = np.stack([x0 - t.x0, y0 - t.y0, x1 - t.x0, y1 - t.y0], axis=1)[seen]
        b = b + rng.normal(0, 2.0, b.shape)
        s = rng.uniform(0, 1, len(b)).round(2)  # ties on purpose
        c = rng.integers(0, 2, len(b)).astype(np.int32)
        per_tile.append(TileDetections(b, s, c))
    return tiles, per_tile


CASES = [
    (seed, n, w, h, big)
    for seed, (n, w, h, big) in enumerate(
        [
            (0, 1920, 1440, False),
            (1, 1920, 1440, False),
            (40, 1920, 1440, False),
            (300, 1920, 1440, False),
            (600, 2600, 1900, False),
            (900, 3196, 1737, False),
            (150, 2600, 1900, True),
            (50, 900, 700, False),
            (2500, 2600, 1900, False),
        ]
    )
]


@pytest.mark.parametrize("seed,n,width,height,big", CASES)
def test_sparse_merge_equals_dense(seed, n, width, height, big):
    tiles, per_tile = random_views(seed, n, width, height, big)
    fast = M.merge(tiles, per_tile, width, height)
    ref = dense_merge(tiles, per_tile, width, height)
    assert len(fast) == len(ref)
    np.testing.assert_array_equal(fast.boxes, ref.boxes)
    np.testing.assert_array_equal(fast.scores, ref.scores)
    np.testing.assert_array_equal(fast.classes, ref.classes)


def test_overlap_pairs_are_exactly_the_overlapping_pairs():
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 500, (300, 2))
    wh = rng.uniform(1, 80, (300, 2))
    a = np.concatenate([xy, xy + wh], axis=1)
    b = a[rng.permutation(300)[:200]] + rng.normal(0, 5, (200, 4)).clip(-2, 2)
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 0.5)
    i, j = M._overlap_pairs(a, b)
    got = set(zip(i.tolist(), j.tolist(), strict=True))
    inter_w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    inter_h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    want = set(zip(*np.nonzero((inter_w > 0) & (inter_h > 0)), strict=True))
    assert got == {(int(x), int(y)) for x, y in want}
    assert len(got) > 100
