"""A TF Serving-compatible model server hosting the embedded detector (dev and test tool).

KServe's ``ModelServer`` speaks TF Serving's REST protocol (V1:
``POST /v1/models/{name}:predict`` with ``{"instances": [...]}``), so the gateway's proxy
path is exercised over HTTP against a real server process without Docker.  The model
answers like an AutoML Vision Edge object detector exported for TF Serving.

    .venv/bin/python tools/model_server.py --http_port 8501 --model_name eos

Clients must send ``Content-Type: application/json``.  ``--control-file`` names a JSON
file read on every request, so tests can make the model slow or answer garbage mid-run:
``{"delay_s": 2.0, "garbage": false}``.  With ``"arrivals_file": PATH`` each predict request
adds a line to PATH when it arrives, and with ``"hold": true`` it waits until the file no
longer says so: a test knows its requests are in flight, and lets them go when it chooses.
KServe parses ``sys.argv`` when it is imported and listens on all interfaces; run this as
its own process.
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


class EosDetectorModel(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        self.ready = True
        return self.ready

    async def predict(self, payload: dict, headers: dict | None = None) -> dict:
        control = _control()
        if control.get("arrivals_file"):
            with open(control["arrivals_file"], "a") as arrivals:
                arrivals.write("predict\n")
        while control.get("hold"):
            await asyncio.sleep(0.05)
            control = _control()
        if control.get("delay_s"):
            await asyncio.sleep(float(control["delay_s"]))
        if control.get("garbage"):
            return {"predictions": [{"detection_boxes": "garbage"}]}
        rows = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(rows, list):
            raise InvalidInput('expected {"instances": [...]}')
        preds = await asyncio.gather(*(asyncio.to_thread(_predict_one, r) for r in rows))
        return {"predictions": list(preds)}


if __name__ == "__main__":
    from kserve.model_server import args as kserve_args

    model = EosDetectorModel(kserve_args.model_name)
    kserve.ModelServer().start([model])
