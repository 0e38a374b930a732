"""A real Triton Inference Server hosting the embedded detector (dev and test tool).

Triton speaks the Open Inference Protocol (V2: ``POST /v2/models/{name}/infer``) with its
binary tensor data extension, which KServe's ``ModelServer`` cannot take for BYTES inputs.
``nvidia-pytriton`` bundles ``tritonserver``; the model itself runs in this Python process
and ``tritonserver`` hands it the requests.  It runs from its own virtual environment,
made by ``scripts/triton_venv.sh`` from Debian's ``python3.11``: pytriton pins
``numpy<2``, and its model stub loads the system's ``libpython3.11.so.1.0`` (Debian's)
beside the venv's standard library, so both must come from the same build:

    .venv-triton/bin/python tools/triton_server.py --http-port 8000 --model-name eos

The detection model (``--kind detection``) answers like an AutoML Vision Edge object
detector export, one row per tile:

* input ``image_bytes`` BYTES ``[1]``: the JPEG or PNG bytes of one tile; batched, at most
  ``MAX_BATCH`` rows a request.  Triton's dynamic batcher is off, so each request is run on
  its own: its answer never depends on what else arrived, and a bad image fails only the
  request that holds it (500, with pytriton's traceback as ``error``);
* outputs ``detection_boxes`` FP32 ``[-1, 4]`` (``[ymin, xmin, ymax, xmax]`` normalized to
  the tile, or ``[x0, y0, x1, y1]`` in its pixels with ``--box-format xyxy_pixels``),
  ``detection_scores`` FP32 ``[-1]`` (descending), ``detection_classes`` FP32 ``[-1]``
  (1 for a cell), ``detection_classes_as_text`` BYTES ``[-1]`` and ``num_detections`` FP32
  ``[1]``.  The rows of one request are padded with zeros (and ``b""``) to the longest
  row, as a TF batch is; ``num_detections`` gives each row's count.  A request without
  any detection answers one zero row (``num_detections`` 0): pytriton cannot hand an
  empty tensor to ``tritonserver``.

``--kind classification`` is the project's small classifier (as in
``tools/model_server.py``): outputs ``scores`` FP32 ``[-1]`` and ``labels`` BYTES ``[-1]``.

Only HTTP is served (gRPC and metrics are off), on ``--host`` (loopback by default).
SIGTERM and SIGINT stop ``tritonserver`` and remove pytriton's workspace (under
``PYTRITON_HOME``, default ``~/.cache/pytriton``).
"""

from __future__ import annotations

import argparse
import io
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.detector import detect  # noqa: E402

MAX_BATCH = 8
BOX_FORMATS = ("yxyx_normalized", "xyxy_pixels")
CLASSES = ("eosinophils", "none")


def decode(data: bytes) -> np.ndarray:
    """One tile's bytes as an H x W x 3 uint8 array; ``ValueError`` names a bad image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as exc:  # Pillow raises many kinds for a bad image
        raise ValueError(f"cannot decode image_bytes: {exc}") from exc


def _row_bytes(images: np.ndarray) -> list[bytes]:
    """The rows of a ``[batch, 1]`` BYTES input (object or ``S`` dtype) as bytes."""
    return [bytes(v) for v in np.asarray(images).reshape(len(images), -1)[:, 0]]


def detection_outputs(
    images: Sequence[bytes],
    cell_size_px: float | None = None,
    label: str = "eos",
    box_format: str = "yxyx_normalized",
    max_detections: int = 100,
) -> dict[str, np.ndarray]:
    """The detection outputs of a batch of tiles, padded to its longest row."""
    rows = []
    for data in images:
        rgb = decode(data)
        h, w = rgb.shape[:2]
        det = detect(rgb, cell_size_px)
        order = np.argsort(-det.scores, kind="stable")[:max_detections]
        b = det.boxes[order].astype(np.float64)
        if box_format == "xyxy_pixels":
            boxes = b
        else:
            boxes = np.clip(np.stack([b[:, 1] / h, b[:, 0] / w, b[:, 3] / h, b[:, 2] / w], 1), 0, 1)
        rows.append((boxes.reshape(-1, 4), det.scores[order]))
    # At least one row: pytriton cannot hand an empty tensor to tritonserver.
    width = max([1] + [len(s) for _, s in rows])
    n = len(rows)
    out = {
        "detection_boxes": np.zeros((n, width, 4), np.float32),
        "detection_scores": np.zeros((n, width), np.float32),
        "detection_classes": np.zeros((n, width), np.float32),
        "detection_classes_as_text": np.full((n, width), b"", dtype=f"S{len(label.encode()) or 1}"),
        "num_detections": np.zeros((n, 1), np.float32),
    }
    for i, (boxes, scores) in enumerate(rows):
        k = len(scores)
        out["detection_boxes"][i, :k] = boxes
        out["detection_scores"][i, :k] = scores
        out["detection_classes"][i, :k] = 1.0
        out["detection_classes_as_text"][i, :k] = label.encode()
        out["num_detections"][i, 0] = k
    return out


def classification_outputs(
    images: Sequence[bytes], cell_size_px: float | None = None
) -> dict[str, np.ndarray]:
    """Scores and labels per image: ``eosinophils`` scores ``1 - exp(-count / 2)``, where
    count is what the detector finds on the whole image, and ``none`` the rest."""
    scores = np.zeros((len(images), len(CLASSES)), np.float32)
    for i, data in enumerate(images):
        count = len(detect(decode(data), cell_size_px).scores)
        p = 1.0 - float(np.exp(-count / 2.0))
        scores[i] = (p, 1.0 - p)
    labels = np.array([[c.encode() for c in CLASSES]] * len(images), dtype=np.bytes_)
    return {"scores": scores, "labels": labels.reshape(len(images), len(CLASSES))}


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-name", default="eos")
    p.add_argument("--kind", choices=("detection", "classification"), default="detection")
    p.add_argument("--box-format", choices=BOX_FORMATS, default="yxyx_normalized")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--cell-size-px", type=float, default=None)
    p.add_argument("--label", default="eos")
    p.add_argument("--max-detections", type=int, default=100)
    return p.parse_args(argv)


def _infer_function(args: argparse.Namespace) -> Callable[[list], list[dict[str, np.ndarray]]]:
    """pytriton's request-list form (no ``@batch``): each request is answered and padded on
    its own, whatever tritonserver hands over together."""

    def one(images: list[bytes]) -> dict[str, np.ndarray]:
        if args.kind == "classification":
            return classification_outputs(images, args.cell_size_px)
        return detection_outputs(
            images, args.cell_size_px, args.label, args.box_format, args.max_detections
        )

    def infer(requests: list) -> list[dict[str, np.ndarray]]:
        from pytriton.exceptions import PyTritonValidationError

        answers = []
        for request in requests:
            try:
                answers.append(one(_row_bytes(request["image_bytes"])))
            except ValueError as exc:
                raise PyTritonValidationError(str(exc)) from exc
        return answers

    return infer


def _tensors(kind: str) -> tuple[list, list]:
    from pytriton.model_config import Tensor

    inputs = [Tensor(name="image_bytes", dtype=bytes, shape=(1,))]
    if kind == "classification":
        return inputs, [
            Tensor(name="scores", dtype=np.float32, shape=(-1,)),
            Tensor(name="labels", dtype=bytes, shape=(-1,)),
        ]
    return inputs, [
        Tensor(name="detection_boxes", dtype=np.float32, shape=(-1, 4)),
        Tensor(name="detection_scores", dtype=np.float32, shape=(-1,)),
        Tensor(name="detection_classes", dtype=np.float32, shape=(-1,)),
        Tensor(name="detection_classes_as_text", dtype=bytes, shape=(-1,)),
        Tensor(name="num_detections", dtype=np.float32, shape=(1,)),
    ]


def _stop_on_sigterm() -> None:
    """pytriton's ``serve()`` stops cleanly on KeyboardInterrupt only."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> None:
    args = _args(argv)
    from pytriton.model_config import ModelConfig
    from pytriton.triton import Triton, TritonConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _stop_on_sigterm()
    config = TritonConfig(
        http_address=args.host,
        http_port=args.http_port,
        allow_grpc=False,
        allow_metrics=False,
    )
    inputs, outputs = _tensors(args.kind)
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.model_name,
            infer_func=_infer_function(args),
            inputs=inputs,
            outputs=outputs,
            config=ModelConfig(max_batch_size=MAX_BATCH, batcher=None),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
