"""A TF Serving-compatible model server hosting the embedded detector (dev and test tool).

KServe's ``ModelServer`` speaks TF Serving's REST protocol (V1:
``POST /v1/models/{name}:predict`` with ``{"instances": [...]}``), so the gateway's proxy
path is exercised over HTTP against a real server process without Docker.  The model
answers like an AutoML Vision Edge object detector exported for TF Serving.

    .venv/bin/python tools/model_server.py --http_port 8501 --model_name eos

``--kind`` picks what the model is, for the gateway's three kinds of service:

* ``detection`` (default): the embedded detector, answering as above.
* ``classification``: a small deterministic classifier of this project's, answering like
  an AutoML Vision Edge classification export (``{"scores", "labels", "key"}`` per image).
  It counts cells with the embedded detector on the whole image: ``eosinophils`` scores
  ``1 - exp(-count / 2)`` and ``none`` the rest, so the same image always gets the same
  answer and an image with cells gets a different one from an empty one.
* ``echo``: any body; it answers ``{"predictions": instances}`` or ``{"outputs": inputs}``
  unchanged.  An instance ``"refuse"`` makes it answer 400, ``"crash"`` 500.

Clients must send ``Content-Type: application/json``.  ``--control-file`` names a JSON
file read on every request, so tests can make the model slow or answer garbage mid-run:
``{"delay_s": 2.0, "garbage": false}``.  KServe parses ``sys.argv`` when it is imported and
listens on all interfaces; run this as its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _own_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--control-file", default=None)
    p.add_argument("--cell-size-px", type=float, default=None)
    p.add_argument("--max-detections", type=int, default=100)
    p.add_argument("--label", default="eos")
    p.add_argument("--kind", choices=("detection", "classification", "echo"), default="detection")
    args, _ = p.parse_known_args()
    return args


OWN = _own_args()

import kserve  # noqa: E402  (parses sys.argv on import)
import numpy as np  # noqa: E402
from kserve.errors import InvalidInput  # noqa: E402
from PIL import Image  # noqa: E402

from gateway.detector import detect  # noqa: E402


def _control() -> dict:
    if not OWN.control_file:
        return {}
    try:
        return json.loads(Path(OWN.control_file).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _predict_one(row: dict) -> dict:
    if not isinstance(row, dict) or not isinstance(row.get("image_bytes"), dict):
        raise InvalidInput('each instance needs "image_bytes": {"b64": ...}')
    try:
        data = base64.b64decode(row["image_bytes"]["b64"], validate=True)
        img = Image.open(io.BytesIO(data))
        rgb = np.asarray(img.convert("RGB"))
    except Exception as exc:
        raise InvalidInput(f"cannot decode image: {exc}") from exc
    h, w = rgb.shape[:2]
    det = detect(rgb, OWN.cell_size_px)
    order = np.argsort(-det.scores, kind="stable")[: OWN.max_detections]
    b = det.boxes[order].astype(np.float64)
    boxes = np.stack([b[:, 1] / h, b[:, 0] / w, b[:, 3] / h, b[:, 2] / w], axis=1)
    n = len(order)
    return {
        "detection_boxes": np.clip(boxes, 0, 1).round(6).tolist(),
        "detection_scores": det.scores[order].astype(np.float64).round(6).tolist(),
        "detection_classes": [1.0] * n,
        "detection_classes_as_text": [OWN.label] * n,
        "num_detections": float(n),
        "image_info": [h, w, 1, 0, w, h],
        "key": row.get("key", ""),
    }


CLASSES = ("eosinophils", "none")


def _classify_one(row: dict) -> dict:
    if not isinstance(row, dict) or not isinstance(row.get("image_bytes"), dict):
        raise InvalidInput('each instance needs "image_bytes": {"b64": ...}')
    try:
        data = base64.b64decode(row["image_bytes"]["b64"], validate=True)
        rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except Exception as exc:
        raise InvalidInput(f"cannot decode image: {exc}") from exc
    count = len(detect(rgb, OWN.cell_size_px).scores)
    p = round(1.0 - float(np.exp(-count / 2.0)), 6)
    return {"scores": [p, round(1.0 - p, 6)], "labels": list(CLASSES), "key": row.get("key", "")}


def _echo(payload: dict) -> dict:
    values = payload.get("instances", payload.get("inputs"))
    if isinstance(values, list) and "refuse" in values:
        raise InvalidInput("refused: this model does not take 'refuse'")
    if isinstance(values, list) and "crash" in values:
        raise RuntimeError("the model crashed")
    if "instances" in payload:
        return {"predictions": payload["instances"]}
    return {"outputs": payload.get("inputs")}


class EosDetectorModel(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        self.ready = True
        return self.ready

    async def predict(self, payload: dict, headers: dict | None = None) -> dict:
        control = _control()
        if control.get("delay_s"):
            await asyncio.sleep(float(control["delay_s"]))
        if control.get("garbage"):
            return {"predictions": [{"detection_boxes": "garbage"}]}
        if OWN.kind == "echo":
            return _echo(payload)
        rows = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(rows, list):
            raise InvalidInput('expected {"instances": [...]}')
        one = _classify_one if OWN.kind == "classification" else _predict_one
        preds = await asyncio.gather(*(asyncio.to_thread(one, r) for r in rows))
        return {"predictions": list(preds)}


if __name__ == "__main__":
    from kserve.model_server import args as kserve_args

    model = EosDetectorModel(kserve_args.model_name)
    kserve.ModelServer().start([model])
