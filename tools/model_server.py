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
``{"delay_s": 2.0, "garbage": false}``.  With ``"arrivals_file": PATH`` each predict request
adds a line to PATH when it arrives, and with ``"hold": true`` it waits until the file no
longer says so: a test knows its requests are in flight, and lets them go when it chooses.
KServe parses ``sys.argv`` when it is imported and listens on all interfaces; run this as
its own process.

KServe's V1 protocol knows neither versions, labels nor metadata; routes added to its
FastAPI app answer them as TF Serving does (api_rest.md), with TF Serving's error texts:
``--versions 1,2`` (the latest is the default), ``--version-labels stable=1,canary=2``.
Each prediction also carries the export's other per-detection outputs
(``detection_multiclass_scores``, ``detection_anchor_indices``) and ``image_info``;
``--pad-detections`` pads every output to ``--max-detections`` rows as the export does,
``num_detections`` giving the real count.

The same model answers the Open Inference Protocol (V2) that KServe serves beside it:
``POST /v2/models/{name}/infer`` with the images as one BYTES tensor ``[n]`` of base64
strings (``"parameters": {"content_type": "base64"}``, MLServer's convention; the model
decodes them itself).  A detector answers ``boxes`` [n, k, 4] (FP32) in
``--v2-box-format`` (``yxyx_normalized`` as TF's exports, ``xyxy_normalized``, or
``xyxy_pixels`` as YOLO's), ``scores`` [n, k], ``classes`` [n, k] (BYTES text) and
``num_detections`` [n] (INT32), k being the batch's largest count (``--max-detections``
with ``--pad-detections``); ``--v2-outputs boxes=...,scores=...,classes=...`` names them
(default ``detection_boxes``, ``detection_scores``, ``detection_classes_as_text``).  A
classifier answers ``scores`` [n, 2] (FP32) and ``labels`` [n, 2] (BYTES).  Outputs come
in JSON, or as binary data when the request asks (``"binary_data": true``).  KServe 0.21
turns binary BYTES inputs into UTF-8 text, so images cannot reach a model that way.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.backends.boxes import BOX_FORMATS  # noqa: E402

V2_OUTPUTS = {
    "boxes": "detection_boxes",
    "scores": "detection_scores",
    "classes": "detection_classes_as_text",
}


def _own_parser() -> argparse.ArgumentParser:
    """This tool's options; KServe's own (``--http_port``, ``--model_name``, ...) are parsed
    by KServe when it is imported."""
    p = argparse.ArgumentParser(add_help=False)
    own = p.add_argument_group("the model (this tool)")
    own.add_argument(
        "--kind",
        choices=("detection", "classification", "echo"),
        default="detection",
        help="what the model is: detection is the embedded detector",
    )
    own.add_argument(
        "--control-file",
        default=None,
        metavar="FILE",
        help='JSON read on every request: {"delay_s", "garbage", "arrivals_file", "hold"}',
    )
    own.add_argument(
        "--cell-size-px",
        type=float,
        default=None,
        help="the detector's cell diameter in pixels; none: estimated per image",
    )
    own.add_argument("--max-detections", type=int, default=100, help="rows of --pad-detections")
    own.add_argument("--label", default="eos", help="the detections' class text")
    own.add_argument(
        "--versions",
        default="1",
        help="versions answered, comma-separated; the latest is the default",
    )
    own.add_argument("--version-labels", default="", help="labels of versions: stable=1,canary=2")
    own.add_argument(
        "--pad-detections",
        action="store_true",
        help="pad every output to --max-detections rows, as the AutoML export does",
    )
    own.add_argument(
        "--v2-box-format",
        choices=BOX_FORMATS,
        default="yxyx_normalized",
        help="the V2 answer's box layout",
    )
    own.add_argument(
        "--v2-outputs",
        default="",
        help="the V2 output names: boxes=...,scores=...,classes=...",
    )
    return p


def _help() -> None:
    """KServe parses ``sys.argv`` when imported and has no ``--help``: asked for help, this
    prints this tool's options and KServe's, and exits before anything listens."""
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        from kserve.model_server import parser as kserve_parser
    finally:
        sys.argv = argv
    parser = argparse.ArgumentParser(
        prog="tools/model_server.py",
        description=__doc__.split("\n\n")[0],
        epilog="The model server's options above the tool's are KServe's ModelServer's.",
        parents=[kserve_parser, _own_parser()],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.print_help()
    raise SystemExit(0)


def _own_args() -> argparse.Namespace:
    p = _own_parser()
    args, _ = p.parse_known_args()
    pairs = (x.partition("=")[::2] for x in args.v2_outputs.split(",") if x.strip())
    names = {k.strip(): v.strip() for k, v in pairs}
    if set(names) - set(V2_OUTPUTS) or not all(names.values()):
        p.error(f"--v2-outputs takes {'=...,'.join(V2_OUTPUTS)}=..., not {args.v2_outputs}")
    args.v2_outputs = {**V2_OUTPUTS, **names}
    args.versions = sorted({int(v) for v in args.versions.split(",") if v.strip()})
    args.version_labels = dict(
        (k.strip(), int(v))
        for k, _, v in (x.partition("=") for x in args.version_labels.split(","))
        if k.strip()
    )
    return args


if {"-h", "--help"} & set(sys.argv[1:]):
    _help()
OWN = _own_args()

import kserve  # noqa: E402  (parses sys.argv on import)
import numpy as np  # noqa: E402
from fastapi import Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from kserve import model_server as kserve_server  # noqa: E402
from kserve.errors import InvalidInput  # noqa: E402
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse  # noqa: E402
from PIL import Image  # noqa: E402

from gateway.backends.local import DETECTION_OUTPUTS, model_metadata, version_status  # noqa: E402
from gateway.detector import detect  # noqa: E402

OUTPUTS = {
    **DETECTION_OUTPUTS,
    "detection_multiclass_scores": ("DT_FLOAT", (-1, -1, 2)),  # background, the label
    "detection_anchor_indices": ("DT_FLOAT", (-1, -1)),
    "image_info": ("DT_INT32", (-1, 6)),
}


def _control() -> dict:
    if not OWN.control_file:
        return {}
    try:
        return json.loads(Path(OWN.control_file).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _instance_image(row: dict) -> np.ndarray:
    """The decoded image of a V1 instance ``{"image_bytes": {"b64": ...}}``."""
    if not isinstance(row, dict) or not isinstance(row.get("image_bytes"), dict):
        raise InvalidInput('each instance needs "image_bytes": {"b64": ...}')
    try:
        data = base64.b64decode(row["image_bytes"]["b64"], validate=True)
    except Exception as exc:
        raise InvalidInput(f"cannot decode image: {exc}") from exc
    return _decode(data)


def _decode(data: bytes) -> np.ndarray:
    try:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except Exception as exc:
        raise InvalidInput(f"cannot decode image: {exc}") from exc


def _best(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image's best ``--max-detections`` detections: boxes in pixels [x0, y0, x1, y1],
    scores rounded as the answers carry them, and their order among all detections."""
    det = detect(rgb, OWN.cell_size_px)
    order = np.argsort(-det.scores, kind="stable")[: OWN.max_detections]
    return det.boxes[order].astype(np.float64), det.scores[order].astype(np.float64).round(6), order


def _predict_one(row: dict) -> dict:
    rgb = _instance_image(row)
    h, w = rgb.shape[:2]
    b, scores, order = _best(rgb)
    boxes = np.stack([b[:, 1] / h, b[:, 0] / w, b[:, 3] / h, b[:, 2] / w], axis=1)
    n = len(order)
    rows = OWN.max_detections if OWN.pad_detections else n
    pad = rows - n
    return {
        "detection_boxes": np.clip(boxes, 0, 1).round(6).tolist() + [[0.0] * 4] * pad,
        "detection_scores": scores.tolist() + [0.0] * pad,
        "detection_classes": [1.0] * n + [0.0] * pad,
        "detection_classes_as_text": [OWN.label] * n + [""] * pad,
        "detection_multiclass_scores": [[round(1 - s, 6), s] for s in scores.tolist()]
        + [[0.0, 0.0]] * pad,
        "detection_anchor_indices": [float(i) for i in order.tolist()] + [0.0] * pad,
        "num_detections": float(n),
        "image_info": [h, w, 1, 0, w, h],
        "key": row.get("key", ""),
    }


CLASSES = ("eosinophils", "none")


def _class_scores(rgb: np.ndarray) -> list[float]:
    count = len(detect(rgb, OWN.cell_size_px).scores)
    p = round(1.0 - float(np.exp(-count / 2.0)), 6)
    return [p, round(1.0 - p, 6)]


def _classify_one(row: dict) -> dict:
    scores = _class_scores(_instance_image(row))
    return {"scores": scores, "labels": list(CLASSES), "key": row.get("key", "")}


# -- the Open Inference Protocol (V2) -------------------------------------------------------


def _v2_images(request: InferRequest) -> list[bytes]:
    """The images of a V2 request: one BYTES input of base64 strings (``content_type``)."""
    if len(request.inputs) != 1 or request.inputs[0].datatype != "BYTES":
        raise InvalidInput("expected one BYTES input of encoded images")
    tensor = request.inputs[0]
    data = tensor.data
    if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
        raise InvalidInput("expected the images as a list of strings")
    if (tensor.parameters or {}).get("content_type") != "base64":
        raise InvalidInput('expected base64 images ("parameters": {"content_type": "base64"})')
    try:
        return [base64.b64decode(v, validate=True) for v in data]
    except ValueError as exc:
        raise InvalidInput(f"cannot decode image: {exc}") from exc


def _v2_boxes(b: np.ndarray, w: int, h: int) -> np.ndarray:
    """Pixel boxes [x0, y0, x1, y1] in ``--v2-box-format``, clipped to the image."""
    if OWN.v2_box_format == "yxyx_normalized":
        out = np.clip(np.stack([b[:, 1] / h, b[:, 0] / w, b[:, 3] / h, b[:, 2] / w], 1), 0, 1)
    elif OWN.v2_box_format == "xyxy_normalized":
        out = np.clip(b / np.array([w, h, w, h]), 0, 1)
    else:
        out = np.clip(b, 0, np.array([w, h, w, h]))
    return out.round(6)


def _v2_detect_one(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    rgb = _decode(data)
    b, scores, _ = _best(rgb)
    return _v2_boxes(b, rgb.shape[1], rgb.shape[0]), scores


async def _v2_outputs(images: list[bytes]) -> list[InferOutput]:
    n = len(images)
    if OWN.kind == "classification":
        rows = await asyncio.gather(
            *(asyncio.to_thread(lambda d: _class_scores(_decode(d)), d) for d in images)
        )
        labels = np.array([[c.encode() for c in CLASSES]] * n, dtype=object).reshape(n, 2)
        return [
            InferOutput("scores", [n, 2], "FP32", np.array(rows, np.float32).reshape(n, 2)),
            InferOutput("labels", [n, 2], "BYTES", labels),
        ]
    found = await asyncio.gather(*(asyncio.to_thread(_v2_detect_one, d) for d in images))
    k = OWN.max_detections if OWN.pad_detections else max((len(s) for _, s in found), default=0)
    boxes = np.zeros((n, k, 4), np.float32)
    scores = np.zeros((n, k), np.float32)
    classes = np.full((n, k), b"", dtype=object)
    counts = np.zeros(n, np.int32)
    for i, (b, s) in enumerate(found):
        boxes[i, : len(s)], scores[i, : len(s)] = b, s
        classes[i, : len(s)] = OWN.label.encode()
        counts[i] = len(s)
    names = OWN.v2_outputs
    return [
        InferOutput(names["boxes"], [n, k, 4], "FP32", boxes),
        InferOutput(names["scores"], [n, k], "FP32", scores),
        InferOutput(names["classes"], [n, k], "BYTES", classes),
        InferOutput("num_detections", [n], "INT32", counts),
    ]


async def _infer_v2(name: str, request: InferRequest, garbage: bool) -> InferResponse:
    if OWN.kind == "echo":
        raise InvalidInput("the echo model answers V1 requests only")
    if garbage:  # a detector's boxes without a batch, and nothing else
        outputs = [InferOutput(OWN.v2_outputs["boxes"], [1], "FP32", np.zeros(1, np.float32))]
        return InferResponse(str(request.id or "-"), name, outputs)
    outputs = await _v2_outputs(_v2_images(request))
    return InferResponse(
        # KServe answers 500 to a response without an id
        response_id=str(request.id or uuid.uuid4()),
        model_name=name,
        infer_outputs=outputs,
        requested_outputs=request.request_outputs,
        use_binary_outputs=request.use_binary_outputs,
    )


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

    def get_input_types(self) -> list[dict]:
        """What ``GET /v2/models/{name}`` lists: the V2 tensors this model takes..."""
        return [{"name": "image_bytes", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        """...and answers."""
        if OWN.kind == "classification":
            return [
                {"name": "scores", "datatype": "FP32", "shape": [-1, len(CLASSES)]},
                {"name": "labels", "datatype": "BYTES", "shape": [-1, len(CLASSES)]},
            ]
        if OWN.kind == "echo":
            return []
        names = OWN.v2_outputs
        return [
            {"name": names["boxes"], "datatype": "FP32", "shape": [-1, -1, 4]},
            {"name": names["scores"], "datatype": "FP32", "shape": [-1, -1]},
            {"name": names["classes"], "datatype": "BYTES", "shape": [-1, -1]},
            {"name": "num_detections", "datatype": "INT32", "shape": [-1]},
        ]

    async def predict(
        self, payload: dict | InferRequest, headers: dict | None = None
    ) -> dict | InferResponse:
        control = _control()
        if control.get("arrivals_file"):
            with open(control["arrivals_file"], "a") as arrivals:
                arrivals.write("predict\n")
        while control.get("hold"):
            await asyncio.sleep(0.05)
            control = _control()
        if control.get("delay_s"):
            await asyncio.sleep(float(control["delay_s"]))
        if isinstance(payload, InferRequest):
            return await _infer_v2(self.name, payload, bool(control.get("garbage")))
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


# -- TF Serving's versions, labels and metadata -------------------------------------------


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _resolve(name: str, version: str | None, label: str | None) -> int | JSONResponse:
    """The version a request is for, or TF Serving's refusal (server_core.cc)."""
    if name != MODEL.name:
        return _error(404, f"Servable not found for request: Latest({name})")
    if label is not None:
        if label not in OWN.version_labels:
            return _error(400, f"Unrecognized servable version label: {label}")
        return OWN.version_labels[label]
    if version is not None:
        if not version.isdigit() or int(version) not in OWN.versions:
            return _error(404, f"Servable not found for request: Specific({name}, {version})")
        return int(version)
    return OWN.versions[-1]


async def _predict(name: str, version: str | None, label: str | None, request: Request):
    found = _resolve(name, version, label)
    if isinstance(found, JSONResponse):
        return found
    try:
        payload = await request.json()
    except ValueError:
        return _error(400, "JSON Parse error: Invalid value")
    return JSONResponse(await MODEL.predict(payload))


async def _status(name: str, version: str | None, label: str | None):
    if name != MODEL.name:
        return _error(404, f"Could not find any versions of model {name}")
    found = _resolve(name, version, label)
    if isinstance(found, JSONResponse):
        if found.status_code == 404:
            return _error(404, f"Could not find version {version} of model {name}")
        return found
    chosen = OWN.versions if version is None and label is None else [found]
    return {"model_version_status": [version_status(str(v)) for v in reversed(chosen)]}


async def _metadata(name: str, version: str | None, label: str | None):
    found = _resolve(name, version, label)
    if isinstance(found, JSONResponse):
        return found
    return model_metadata(name, str(found), OUTPUTS)


def _register_tf_serving_routes(app) -> None:
    """Added before KServe's own routes, so they answer first (GET /v1/models/{name})."""
    base = "/v1/models/{name}"
    for pin, version, label in (
        ("", False, False),
        ("/versions/{version}", True, False),
        ("/labels/{label}", False, True),
    ):

        def args(kw: dict, v=version, lab=label) -> tuple:
            return kw["name"], kw.get("version") if v else None, kw.get("label") if lab else None

        async def predict(request: Request, _args=args):
            return await _predict(*_args(request.path_params), request)

        async def status(request: Request, _args=args):
            return await _status(*_args(request.path_params))

        async def metadata(request: Request, _args=args):
            return await _metadata(*_args(request.path_params))

        if pin:  # KServe answers the unpinned :predict itself
            app.add_api_route(base + pin + ":predict", predict, methods=["POST"])
        app.add_api_route(base + pin + "/metadata", metadata, methods=["GET"])
        app.add_api_route(base + pin, status, methods=["GET"])


if __name__ == "__main__":
    from kserve.model_server import args as kserve_args

    MODEL = EosDetectorModel(kserve_args.model_name)
    _register_tf_serving_routes(kserve_server.app)
    kserve.ModelServer().start([MODEL])
