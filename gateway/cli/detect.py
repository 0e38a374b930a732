"""``python -m gateway detect PATH...``: count eosinophils on slide photographs.

Without ``--url`` the slides go through the same pipeline as the deployed function, in
this process (the embedded detector, or the TF Serving backend the configuration in
``GATEWAY_CONFIG`` names), so a count here equals the API's count for the same slide and
threshold.  With ``--url`` each slide is sent to a deployed gateway's ``:detect`` route.

One slide failing (unreadable, not an image, refused by the gateway) never stops the
others; it is reported with its reason and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import mimetypes
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlencode

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif"})
RENDER_MAX_PIXELS = 400_000_000  # rendering is local: only the gateway's limit matters


class SlideFailed(Exception):
    """One slide could not be counted; the message says why, for a person."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Slide:
    path: str
    count: int | None = None
    detections: list[dict[str, Any]] | None = None
    width: int | None = None
    height: int | None = None
    seconds: float | None = None
    threshold: float | None = None
    error: str | None = None
    code: str | None = None
    render: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Counted:
    """What a runner found on one slide: the same fields whichever way it was counted."""

    count: int
    detections: list[dict[str, Any]]
    width: int
    height: int
    threshold: float
    extra: dict[str, Any] = field(default_factory=dict)


# --- finding the slides -----------------------------------------------------------------


def collect(paths: Sequence[str]) -> list[tuple[Path, Path]]:
    """(file, folder it was found under) for every image; named files are kept as given.

    Folders are walked recursively and filtered by image suffix; a file named on the
    command line is taken whatever its suffix (the gateway decides if it is an image).
    """
    found: list[tuple[Path, Path]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    found.append((f, p))
        else:
            found.append((p, p.parent))
    return found


# --- the two ways of counting -----------------------------------------------------------


class InProcess:
    """The embedded gateway: same code path as ``POST /v1/services/{service}:detect``."""

    def __init__(self, service: str, threshold: float | None) -> None:
        from gateway.config import load_config
        from gateway.runtime import build_gateway

        config = load_config()
        # No usage records or quotas for a local run: nobody is calling an API here.
        config = dataclasses.replace(config, usage={**config.usage, "enabled": False})
        self.gw = build_gateway(config)
        self.svc = self.gw.services.get(service)  # UnknownService: a usage error, not per slide
        self.threshold = self.svc.config.threshold if threshold is None else threshold

    def count(self, path: Path, data: bytes) -> Counted:
        from gateway.codecs.detect import detections
        from gateway.config import CLASSIFICATION
        from gateway.context import RequestContext
        from gateway.errors import GatewayError
        from gateway.usecases.classification import classify
        from gateway.usecases.detection import detect

        ctx = RequestContext(method="CLI", path=str(path))
        ctx.service, ctx.route = self.svc.config.name, "detect"
        limits, quota = self.gw.config.limits, self.gw.usage
        try:
            if self.svc.config.kind == CLASSIFICATION:
                (image,) = classify(self.svc, [data], ctx=ctx, limits=limits, quota=quota).images
            else:
                (slide,) = detect(
                    self.svc, [data], self.threshold, ctx=ctx, limits=limits, quota=quota
                ).slides
        except GatewayError as exc:
            raise SlideFailed(exc.message, exc.code) from exc
        if self.svc.config.kind == CLASSIFICATION:
            label, score = image.best()
            return Counted(
                count=0,
                detections=[],
                width=image.info.width,
                height=image.info.height,
                threshold=self.threshold,
                extra={"label": label, "score": round(float(score), 6)},
            )
        return Counted(
            count=len(slide.kept),
            detections=detections(slide.kept, slide.slide.labels),
            width=slide.slide.width,
            height=slide.slide.height,
            threshold=self.threshold,
        )


class Remote:
    """A deployed gateway's ``:detect`` route, the image sent as the raw request body."""

    def __init__(
        self,
        url: str,
        service: str,
        threshold: float | None,
        api_key: str | None,
        id_token: str | None,
        timeout_s: float,
    ) -> None:
        import urllib3

        self.http = urllib3.PoolManager(
            retries=False, timeout=urllib3.Timeout(connect=10.0, read=timeout_s)
        )
        query = {} if threshold is None else {"threshold": repr(threshold)}
        self.endpoint = f"{url.rstrip('/')}/v1/services/{quote(service, safe='')}:detect"
        if query:
            self.endpoint += "?" + urlencode(query)
        self.headers = {"Accept": "application/json", "User-Agent": "eos-gateway-cli"}
        if api_key:
            self.headers["X-API-Key"] = api_key
        elif id_token:
            self.headers["Authorization"] = f"Bearer {id_token}"

    def count(self, path: Path, data: bytes) -> Counted:
        import urllib3

        content_type = mimetypes.guess_type(path.name)[0] or ""
        if not content_type.startswith("image/"):
            content_type = "application/octet-stream"
        try:
            r = self.http.request(
                "POST",
                self.endpoint,
                body=data,
                headers={**self.headers, "Content-Type": content_type},
            )
        except urllib3.exceptions.HTTPError as exc:
            raise SlideFailed(f"cannot reach the gateway: {exc}", "unreachable") from exc
        try:
            doc = json.loads(r.data)
        except ValueError:
            doc = None
        if r.status != 200:
            if isinstance(doc, dict) and "error" in doc:
                raise SlideFailed(
                    f"{doc['error']} (HTTP {r.status}, request {doc.get('request_id')})",
                    doc.get("code"),
                )
            raise SlideFailed(f"the gateway answered HTTP {r.status}", f"http_{r.status}")
        if not isinstance(doc, dict) or not isinstance(doc.get("count"), int):
            raise SlideFailed("the gateway answered 200 without a count", "bad_response")
        return Counted(
            count=doc["count"],
            detections=doc.get("detections") or [],
            width=doc["image"]["width"],
            height=doc["image"]["height"],
            threshold=doc["threshold"],
            extra={"request_id": doc.get("request_id")},
        )


# --- pictures ---------------------------------------------------------------------------


def render_jpeg(data: bytes, detections: Iterable[dict[str, Any]]) -> bytes:
    """The oriented slide at its own size, every kept detection boxed, the count written."""
    from PIL import Image

    from gateway.pipeline.images import decode
    from gateway.render import draw_detections

    image = decode(data, RENDER_MAX_PIXELS)
    dets = list(detections)
    annotated = draw_detections(
        Image.fromarray(image.rgb),
        [d["box"] for d in dets],
        [d["score"] for d in dets],
        count_text=True,
    )
    out = io.BytesIO()
    annotated.save(out, format="JPEG", quality=88)
    return out.getvalue()


class RenderNames:
    """``DIR/<relative path>.jpg``; the folder structure below each argument is kept."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.used: set[Path] = set()

    def name(self, path: Path, root: Path) -> Path:
        try:
            rel = path.relative_to(root)
        except ValueError:
            rel = Path(path.name)
        target = self.directory / rel.with_suffix(".jpg")
        n = 2
        while target in self.used:
            target = self.directory / rel.with_name(f"{rel.stem}-{n}.jpg")
            n += 1
        self.used.add(target)
        return target


# --- progress and output ----------------------------------------------------------------


class Progress:
    """A one-line bar on a terminal, one line per slide otherwise; only for 2+ slides."""

    WIDTH = 28

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream = total, stream
        self.enabled = total > 1
        try:
            self.tty = stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False

    def update(self, done: int, slide: Slide) -> None:
        if not self.enabled:
            return
        result = f"{slide.count}" if slide.ok else "failed"
        if self.tty:
            filled = round(self.WIDTH * done / self.total)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            name = Path(slide.path).name[-30:]
            self.stream.write(f"\r[{bar}] {done}/{self.total} {name:<30} {result:>6}")
            if done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(f"[{done}/{self.total}] {slide.path}: {result}\n")
        self.stream.flush()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def print_table(slides: Sequence[Slide], out: TextIO) -> None:
    rows = [["file", "count", "width", "height", "seconds", "error"]]
    for s in slides:
        rows.append(
            [s.path, _fmt(s.count), _fmt(s.width), _fmt(s.height), _fmt(s.seconds), s.error or ""]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, 5)]
        out.write(("  ".join(cells) + ("  " + r[5] if r[5] else "")).rstrip() + "\n")
    counted = [s for s in slides if s.ok]
    failed = len(slides) - len(counted)
    total = sum(s.count or 0 for s in counted)
    out.write(f"{len(slides)} slides, {failed} failed, {total} eosinophils in total\n")


CSV_FIELDS = ("path", "count", "width", "height", "seconds", "threshold", "error", "code")


def write_csv(slides: Sequence[Slide], out: TextIO) -> None:
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    for s in slides:
        row = [getattr(s, f) for f in CSV_FIELDS]
        writer.writerow(
            [
                "" if v is None else (f"{v:.3f}" if f == "seconds" else v)
                for f, v in zip(CSV_FIELDS, row, strict=True)
            ]
        )


# --- the command ------------------------------------------------------------------------


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("the threshold must be between 0 and 1")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gateway detect",
        description="Count eosinophils on slide photographs (files or folders).",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    p.add_argument("--url", help="a deployed gateway; without it the slides are counted here")
    p.add_argument("--service", default="eos", help="the service to use (default: eos)")
    p.add_argument("--threshold", type=_threshold, help="score threshold (default: the service's)")
    cred = p.add_mutually_exclusive_group()
    cred.add_argument(
        "--api-key",
        default=os.environ.get("GATEWAY_API_KEY"),
        help="API key for --url, sent as X-API-Key (default: $GATEWAY_API_KEY)",
    )
    cred.add_argument("--id-token", help="Firebase or Google ID token for --url (bearer)")
    p.add_argument("--render", metavar="DIR", help="write each slide with its boxes as a JPEG")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    out.add_argument("--csv", metavar="FILE", help="write a CSV table ('-' for stdout)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per slide with --url")
    return p


def _process(
    runner: InProcess | Remote,
    path: Path,
    root: Path,
    renders: RenderNames | None,
) -> Slide:
    slide = Slide(path=str(path))
    started = time.perf_counter()
    try:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SlideFailed(f"cannot read the file: {exc.strerror or exc}", "unreadable") from exc
        counted = runner.count(path, data)
        slide.seconds = round(time.perf_counter() - started, 3)
        slide.count, slide.detections = counted.count, counted.detections
        slide.width, slide.height, slide.threshold = (
            counted.width,
            counted.height,
            counted.threshold,
        )
        if renders is not None:
            target = renders.name(path, root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(render_jpeg(data, counted.detections))
            slide.render = str(target)
    except SlideFailed as exc:
        slide.error, slide.code = str(exc), exc.code
    except Exception as exc:  # one broken slide must not stop the others
        slide.error, slide.code = f"{type(exc).__name__}: {exc}", "internal"
    if slide.seconds is None:
        slide.seconds = round(time.perf_counter() - started, 3)
    return slide


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from gateway import logs

    # stdout carries the results; the gateway's own log lines go to stderr, errors only.
    logs.configure(stream=sys.stderr, min_severity="ERROR")
    if not args.url and (args.api_key or args.id_token):
        args.api_key = args.id_token = None  # credentials only matter for a remote gateway
    files = collect(args.paths)
    if not files:
        print("error: no images found in the given paths", file=sys.stderr)
        return 2
    try:
        if args.url:
            runner: InProcess | Remote = Remote(
                args.url, args.service, args.threshold, args.api_key, args.id_token, args.timeout
            )
        else:
            runner = InProcess(args.service, args.threshold)
    except Exception as exc:  # unknown service, unusable configuration
        print(f"error: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return 2
    renders = RenderNames(Path(args.render)) if args.render else None
    progress = Progress(len(files), sys.stderr)
    slides: list[Slide] = []
    for path, root in files:
        slide = _process(runner, path, root, renders)
        slides.append(slide)
        progress.update(len(slides), slide)
    for s in slides:
        if not s.ok:
            print(f"error: {s.path}: {s.error}", file=sys.stderr)

    if args.json:
        doc = {
            "service": args.service,
            "url": args.url,
            "slides": [
                {k: v for k, v in dataclasses.asdict(s).items() if k != "render" or v}
                for s in slides
            ],
            "failed": sum(not s.ok for s in slides),
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    elif args.csv == "-":
        write_csv(slides, sys.stdout)
    else:
        if args.csv:
            with open(args.csv, "w", newline="", encoding="utf-8") as fh:
                write_csv(slides, fh)
        print_table(slides, sys.stdout)
    sys.stdout.flush()
    return 0 if all(s.ok for s in slides) else 1
