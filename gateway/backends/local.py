"""The embedded backend: the local eosinophil detector, in-process.

It is the default when a service has no TF Serving URL, so a fresh checkout answers
requests without a model server.  Tiles are handed over as array views: no encoding,
no copies.  It answers as a TF Serving with one version, ``"1"``, and no labels, whose
signature is that of an AutoML Vision Edge object detector.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from gateway.backends.base import BackendResult, Readiness, TileDetections, TileInput
from gateway.config import ServiceConfig
from gateway.errors import BackendTimeout, UnknownLabel, UnknownVersion, shorten

LOCAL_MODEL_VERSION = "1"

# name -> (dtype, shape); -1 is TF Serving's unknown size (the batch, the detections).
SIGNATURE_INPUTS: dict[str, tuple[str, tuple[int, ...], str]] = {
    "image_bytes": ("DT_STRING", (-1,), "encoded_image_string_tensor:0"),
    "key": ("DT_STRING", (-1,), "key:0"),
}
DETECTION_OUTPUTS: dict[str, tuple[str, tuple[int, ...]]] = {
    "detection_boxes": ("DT_FLOAT", (-1, -1, 4)),
    "detection_scores": ("DT_FLOAT", (-1, -1)),
    "detection_classes": ("DT_FLOAT", (-1, -1)),
    "detection_classes_as_text": ("DT_STRING", (-1, -1)),
    "num_detections": ("DT_FLOAT", (-1,)),
    "key": ("DT_STRING", (-1,)),
}


def _tensor_info(dtype: str, shape: tuple[int, ...], name: str) -> dict[str, Any]:
    return {
        "dtype": dtype,
        "tensor_shape": {
            "dim": [{"size": str(d), "name": ""} for d in shape],
            "unknown_rank": False,
        },
        "name": name,
    }


def model_metadata(
    model: str,
    version: str,
    outputs: dict[str, tuple[str, tuple[int, ...]]] = DETECTION_OUTPUTS,
) -> dict[str, Any]:
    """``GET /v1/models/{model}/metadata`` as TF Serving answers it (api_rest.md)."""
    signature = {
        "inputs": {k: _tensor_info(*v) for k, v in SIGNATURE_INPUTS.items()},
        "outputs": {k: _tensor_info(d, s, f"{k}:0") for k, (d, s) in outputs.items()},
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": model, "signature_name": "", "version": version},
        "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
    }


def version_status(version: str) -> dict[str, Any]:
    """One row of TF Serving's ``model_version_status``."""
    return {
        "version": version,
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }


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
        cell_px = getattr(self.service.options, "cell_size_px", None)
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

    def _check(self, version: str | None, label: str | None) -> None:
        model = self.service.backend.model
        if label is not None:
            raise UnknownLabel(f"Unrecognized servable version label: {shorten(label)}")
        if version is not None and version != LOCAL_MODEL_VERSION:
            raise UnknownVersion(f"Servable not found for request: Specific({model}, {version})")

    def pinned(self, version: str | None = None, label: str | None = None) -> LocalBackend:
        """This backend for one version or label: its only version is ``"1"``."""
        self._check(version, label)
        return self

    def model_status(self, version: str | None = None, label: str | None = None) -> dict:
        self._check(version, label)
        return {"model_version_status": [version_status(LOCAL_MODEL_VERSION)]}

    def model_metadata(self, version: str | None = None, label: str | None = None) -> dict:
        self._check(version, label)
        return model_metadata(self.service.backend.model, LOCAL_MODEL_VERSION)

    def readiness(self) -> Readiness:
        return Readiness(
            True, "embedded local detector", self.service.backend.model, LOCAL_MODEL_VERSION
        )
