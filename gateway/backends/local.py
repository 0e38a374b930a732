"""The embedded backend: the local eosinophil detector, in-process.

It is the default when a service has no TF Serving URL, so a fresh checkout answers
requests without a model server.  Tiles are handed over as array views: no encoding,
no copies.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import numpy as np

from gateway.backends.base import BackendResult, Readiness, TileDetections, TileInput
from gateway.config import ServiceConfig
from gateway.errors import BackendTimeout

LOCAL_MODEL_VERSION = "local-1"


class LocalBackend:
    wants_encoded = False

    def __init__(self, service: ServiceConfig) -> None:
        self.service = service
        self.labels = service.labels

    def predict(
        self,
        tiles: Iterable[Sequence[TileInput]],
        deadline: float,
        slide_pixels: np.ndarray | None = None,
    ) -> BackendResult:
        from gateway.detector import detect, estimate_cell_diameter

        started = time.perf_counter()
        groups = [list(g) for g in tiles]
        cell_px = self.service.cell_size_px
        if cell_px is None and slide_pixels is not None and sum(map(len, groups)) > 1:
            # One scale for the whole slide: a tile with few cells misjudges it alone.
            cell_px = estimate_cell_diameter(slide_pixels)
        out: list[TileDetections] = []
        for tile in (t for g in groups for t in g):
            if time.monotonic() > deadline:
                raise BackendTimeout(
                    f"the local detector did not finish within {self.service.backend.timeout_s} s"
                )
            if tile.pixels is None:
                raise TypeError("the local detector takes pixel tiles")
            det = detect(tile.pixels, cell_px)
            out.append(
                TileDetections(
                    boxes=det.boxes,
                    scores=det.scores,
                    classes=np.zeros(len(det.scores), dtype=np.int32),
                )
            )
        return BackendResult(
            tiles=out,
            labels=self.labels,
            class_values=(1.0,) * len(self.labels),
            model=self.service.backend.model,
            version=LOCAL_MODEL_VERSION,
            backend_ms=(time.perf_counter() - started) * 1000.0,
        )

    def ensure_reachable(self, deadline: float) -> None:
        return None  # in-process: always there

    def readiness(self) -> Readiness:
        return Readiness(
            True, "embedded local detector", self.service.backend.model, LOCAL_MODEL_VERSION
        )
