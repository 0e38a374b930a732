"""``python -m gateway detect PATH...``: count eosinophils on slide photographs.

Without ``--url`` the slides go through the same pipeline as the deployed function, in
this process (the embedded detector, or the TF Serving backend the configuration in
``GATEWAY_CONFIG`` names), so a count here equals the API's count for the same slide and
threshold.  With ``--url`` the slides are sent to a deployed gateway, several at a time
(``--jobs``), retried when the gateway is busy (:mod:`gateway.cli.retry`); a classifier
service answers a label and a score instead of a count.

One slide failing (unreadable, not an image, refused by the gateway) never stops the
others; it is reported with its reason and makes the exit status 1.  A result file
(``--csv FILE``, ``--json FILE``) is written as slides finish, so ``--resume`` can carry
on where an interrupted run stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import queue
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gateway.cli import batch
from gateway.cli.halt import Halt
from gateway.cli.output import ResultFile, print_table, slide_record, write_csv
from gateway.cli.remote import IMAGE_ROUTES, Remote, Unusable, unknown_kind, with_scheme
from gateway.cli.resume import ResumeRefused, plan
from gateway.cli.retry import RetryPolicy
from gateway.cli.slides import Classified, Counted, Slide, SlideFailed
from gateway.kinds.base import ROUTE_PATHS, CliView

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif"})
RENDER_MAX_PIXELS = 400_000_000  # rendering is local: only the gateway's limit matters
STOPPED_CELL = "not counted: the batch stopped"  # the table's cell; the reason is said once


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
        from gateway.catalog import load_config
        from gateway.runtime import build_gateway

        config = load_config()
        # No usage records or quotas for a local run: nobody is calling an API here.
        config = dataclasses.replace(config, usage={**config.usage, "enabled": False})
        self.gw = build_gateway(config)
        self.svc = self.gw.services.get(service)  # UnknownService: a usage error, not per slide
        view = self.svc.kind.cli  # None: a kind that takes no slides (refused by main)
        self.route = view.route if view is not None else None
        cfg, kind = self.svc.config, self.svc.kind
        self.routes = [
            p.format(name=cfg.name) for r, p in ROUTE_PATHS.items() if kind.serves(r, cfg)
        ]
        default = getattr(self.svc.config.options, "threshold", None)
        self.service_threshold: float | None = default
        self.threshold = default if threshold is None else threshold
        self.service = service
        self.labels: tuple[str, ...] = tuple(getattr(self.svc.config.options, "labels", ()))

    def count(self, path: Path, data: bytes) -> Counted | Classified:
        from gateway.codecs.detect import detections
        from gateway.errors import GatewayError
        from gateway.usecases.checks import no_quota

        limits = self.gw.config.limits
        labels_image = self.route == ":classify"
        try:  # nobody is charged for counting in-process
            found = self.svc.kind.infer(
                self.svc, [data], self.threshold, limits=limits, quota=no_quota
            )
        except GatewayError as exc:
            raise SlideFailed(exc.message, exc.code) from exc
        if labels_image:
            (image,) = found.images
            label, score = image.best()
            scores = [
                {"label": name, "score": round(float(value), 6)}
                for name, value in zip(image.labels, image.scores, strict=True)
            ]
            return Classified(
                label=label,
                score=round(float(score), 6),
                scores=sorted(scores, key=lambda s: -s["score"]),
                width=image.info.width,
                height=image.info.height,
            )
        (slide,) = found.slides
        return Counted(
            count=len(slide.kept),
            detections=detections(slide.kept, slide.slide.labels),
            width=slide.slide.width,
            height=slide.slide.height,
            threshold=self.threshold,
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


def write_geojson(
    target: Path, slide: Path, service: str, counted: Counted, labels: Sequence[str]
) -> None:
    """The slide's detections as QuPath imports them (File > Import objects)."""
    from gateway.codecs.geojson import feature_collection

    about = {
        "service": service,
        "slide": str(slide),
        "count": counted.count,
        "threshold": counted.threshold,
        "image": {"width": counted.width, "height": counted.height},
    }
    doc = feature_collection(counted.detections, labels, about=about)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(doc) + "\n", encoding="utf-8")
    os.replace(tmp, target)  # a file that is there is whole


class RenderNames:
    """``DIR/<relative path><suffix>``; the folder structure below each argument is kept."""

    def __init__(self, directory: Path, suffix: str = ".jpg") -> None:
        self.directory, self.suffix = directory, suffix
        self.used: set[Path] = set()

    def name(self, path: Path, root: Path) -> Path:
        try:
            rel = path.relative_to(root)
        except ValueError:
            rel = Path(path.name)
        target = self.directory / rel.with_suffix(self.suffix)
        n = 2
        while target in self.used:
            target = self.directory / rel.with_name(f"{rel.stem}-{n}{self.suffix}")
            n += 1
        self.used.add(target)
        return target


# --- the command ------------------------------------------------------------------------


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("the threshold must be between 0 and 1")
    return value


def _bounded(kind: type, low: float, high: float):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}")
        return value

    return parse


# Four uploads at a time: enough for a deployed gateway to scale out to a few instances
# and to keep a lab's uplink busy while one slide is being counted, few enough not to
# run into an instance limit or a rate limit at once.  Raise it for big batches.
DEFAULT_JOBS = 4
REMOTE_DEFAULTS: dict[str, int | float] = {
    "jobs": DEFAULT_JOBS,
    "retries": RetryPolicy().retries,
    "max_wait": RetryPolicy().max_wait_s,
    "timeout": 300.0,
}


def _remote_options(args: argparse.Namespace) -> str | None:
    """Fill in the defaults of the options that only apply with ``--url``; a note when
    some were named without it (they change nothing, which a person should know)."""
    named = [k for k in REMOTE_DEFAULTS if getattr(args, k) is not None]
    for key, value in REMOTE_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, type(value)(value))
    if args.url or not named:
        return None
    flags = ", ".join("--" + k.replace("_", "-") for k in named)
    verb = "has" if len(named) == 1 else "have"
    return (
        f"note: {flags} {verb} no effect without --url: the slides are counted here, one at a time"
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eos-gateway detect",
        description="Count eosinophils on slide photographs (files or folders).",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    p.add_argument(
        "--url",
        type=with_scheme,
        help="a deployed gateway (http:// when no scheme is given); without it the slides "
        "are counted here",
    )
    p.add_argument("--service", default="eos", help="the service to use (default: eos)")
    p.add_argument(
        "--threshold",
        type=_threshold,
        help="score threshold (default: the service's; with --resume, the result file's)",
    )
    cred = p.add_mutually_exclusive_group()
    cred.add_argument(
        "--api-key",
        default=os.environ.get("GATEWAY_API_KEY"),
        help="API key for --url, sent as X-API-Key (default: $GATEWAY_API_KEY)",
    )
    cred.add_argument("--id-token", help="Firebase or Google ID token for --url (bearer)")
    p.add_argument("--render", metavar="DIR", help="write each slide with its boxes as a JPEG")
    p.add_argument(
        "--geojson",
        metavar="DIR",
        help="write each slide's detections as GeoJSON (DIR/<slide>.geojson), boxes in the "
        "slide's pixels, for QuPath's File > Import objects",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="without FILE: one JSON document on stdout; with FILE: one JSON line per "
        "slide, appended as slides finish (resumable)",
    )
    out.add_argument("--csv", metavar="FILE", help="write a CSV table ('-' for stdout)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip the slides already counted in the --csv or --json FILE at this "
        "threshold, count the rest (slides counted at another threshold again)",
    )
    # The options of --url default to None so that naming one without --url can be told.
    p.add_argument(
        "--timeout",
        type=float,
        help=f"seconds per slide with --url (default: {REMOTE_DEFAULTS['timeout']:g})",
    )
    p.add_argument(
        "--jobs",
        type=_bounded(int, 1, 64),
        help=f"slides sent at once with --url (default: {DEFAULT_JOBS})",
    )
    policy = RetryPolicy()
    p.add_argument(
        "--retries",
        type=_bounded(int, 0, 100),
        help="with --url: how often one slide is sent again after 429, 503, 504 or a "
        f"dropped connection (default: {policy.retries})",
    )
    p.add_argument(
        "--max-wait",
        type=_bounded(float, 0, 86_400),
        metavar="S",
        help="with --url: seconds one slide may wait between its retries in all; a "
        f"longer Retry-After fails the slide at once (default: {policy.max_wait_s:g})",
    )
    return p


@dataclasses.dataclass(frozen=True)
class Targets:
    """Where one slide's picture and GeoJSON go, when asked for."""

    render: Path | None = None
    geojson: Path | None = None


def _process(runner: InProcess | Remote, path: Path, targets: Targets) -> Slide:
    slide = Slide(path=str(path))
    started = time.perf_counter()
    try:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SlideFailed(f"cannot read the file: {exc.strerror or exc}", "unreadable") from exc
        result = runner.count(path, data)
        slide.seconds = round(time.perf_counter() - started, 3)
        slide.retries = result.retries
        slide.width, slide.height = result.width, result.height
        if isinstance(result, Classified):
            slide.label, slide.score, slide.scores = result.label, result.score, result.scores
        else:
            slide.count, slide.detections = result.count, result.detections
            slide.threshold = result.threshold
        if targets.render is not None and isinstance(result, Counted):
            targets.render.parent.mkdir(parents=True, exist_ok=True)
            targets.render.write_bytes(render_jpeg(data, result.detections))
            slide.render = str(targets.render)
        if targets.geojson is not None and isinstance(result, Counted):
            targets.geojson.parent.mkdir(parents=True, exist_ok=True)
            write_geojson(targets.geojson, path, runner.service, result, runner.labels)
            slide.geojson = str(targets.geojson)
    except SlideFailed as exc:
        slide.error, slide.code, slide.retries = str(exc), exc.code, exc.retries
    except Exception as exc:  # one broken slide must not stop the others
        slide.error, slide.code = f"{type(exc).__name__}: {exc}", "internal"
    if slide.seconds is None:
        slide.seconds = round(time.perf_counter() - started, 3)
    return slide


def _result_file(args: argparse.Namespace) -> tuple[Path, str] | None:
    """(file, format) of a resumable result file, None when results go to stdout only."""
    if args.csv and args.csv != "-":
        return Path(args.csv), "csv"
    if args.json and args.json != "-":
        return Path(args.json), "jsonl"
    return None


def _usage_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _runner(
    args: argparse.Namespace, halt: Halt, notes: queue.Queue[str]
) -> tuple[InProcess | Remote, str, CliView | None]:
    """The way slides will be counted, the service's kind, and what the CLI shows of it
    (None: the kind takes no slides)."""
    if not args.url:
        runner = InProcess(args.service, args.threshold)
        return runner, runner.svc.config.kind, runner.svc.kind.cli
    remote = Remote(
        args.url,
        args.service,
        args.threshold,
        args.api_key,
        args.id_token,
        args.timeout,
        policy=RetryPolicy(retries=args.retries, max_wait_s=args.max_wait),
        halt=halt,
        notify=notes.put,
        pool_size=args.jobs,
    )
    kind = remote.discover()
    return remote, kind, remote.view


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from gateway import logs

    # stdout carries the results; the gateway's own log lines go to stderr, errors only.
    logs.configure(stream=sys.stderr, min_severity="ERROR")
    unused = _remote_options(args)
    if unused:
        print(unused, file=sys.stderr)
    if not args.url and (args.api_key or args.id_token):
        args.api_key = args.id_token = None  # credentials only matter for a remote gateway
    output = _result_file(args)
    if args.resume and output is None:
        return _usage_error("--resume needs a result file: --csv FILE or --json FILE")
    if (
        output is not None
        and args.json
        and (output[0].is_dir() or output[0].suffix.lower() in IMAGE_SUFFIXES)
    ):
        return _usage_error(
            f"--json {output[0]} would write into a slide or folder; name a .jsonl file, "
            "or put --json after the paths"
        )
    files = collect(args.paths)
    if not files:
        return _usage_error("no images found in the given paths")

    halt = Halt()
    notes: queue.Queue[str] = queue.Queue()
    try:
        runner, kind, view = _runner(args, halt, notes)
    except KeyboardInterrupt:
        return 130
    except Unusable as exc:
        return _usage_error(str(exc))
    except Exception as exc:  # unknown service, unusable configuration
        return _usage_error(getattr(exc, "message", None) or str(exc))
    if view is None:
        return _usage_error(
            f"{args.service!r} is a {kind} service: it takes its model's own bodies on "
            f"{' or '.join(runner.routes)}, not slides"
        )
    if view.route not in IMAGE_ROUTES:
        return _usage_error(unknown_kind(args.service, kind))
    for flag in ("render", "geojson"):
        if getattr(args, flag) and view.route != ":detect":
            return _usage_error(f"--{flag} writes detections; {args.service!r} is a {kind} service")
    try:
        results = ResultFile(output[0], output[1], view, args.resume) if output else None
    except (OSError, ValueError) as exc:
        return _usage_error(str(exc))

    order = [str(path) for path, _ in files]
    summary = batch.Summary(slides=len(files), resumable=results is not None)
    skip: set[str] = set()
    if results is not None and args.resume:
        try:
            resumed = plan(
                results, order, args.threshold, runner.service_threshold, view.route == ":detect"
            )
        except ResumeRefused as exc:
            results.close(order)
            return _usage_error(str(exc))
        for line in resumed.notes:
            print(line, file=sys.stderr)
        runner.threshold = resumed.threshold
        skip, summary.recounted = resumed.skip, len(resumed.recount)
        if view.counts:
            summary.eosinophils = resumed.earlier_count(results, order)
    elif view.counts:
        summary.eosinophils = 0
    summary.threshold = runner.threshold

    renders = RenderNames(Path(args.render)) if args.render else None
    shapes = RenderNames(Path(args.geojson), ".geojson") if args.geojson else None
    targets = [
        Targets(
            render=renders.name(path, root) if renders else None,
            geojson=shapes.name(path, root) if shapes else None,
        )
        for path, root in files
    ]
    todo = [(p, t) for (p, _), t in zip(files, targets, strict=True) if str(p) not in skip]
    summary.skipped = len(files) - len(todo)
    progress = batch.Progress(len(todo), sys.stderr)
    slides: list[Slide] = []

    interrupts = batch.Interrupts()

    def done(slide: Slide) -> None:
        with interrupts.shield():  # once its progress line is out, a slide is on disk
            if results is not None:
                results.append(slide)
            slides.append(slide)
            summary.retried += slide.retries
            if slide.ok:
                summary.counted += 1
                if summary.eosinophils is not None:
                    summary.eosinophils += slide.count or 0
            else:
                summary.failed += 1
            progress.update(len(slides), slide)

    def work(item: tuple[Path, Targets]) -> Slide:
        slide = _process(runner, *item)
        halt.after(slide.error, slide.code)  # here, before this worker takes the next slide
        return slide

    started = time.monotonic()
    try:
        with interrupts.installed():
            batch.run(todo, work, args.jobs if args.url else 0, done, notes, progress.note)
    except KeyboardInterrupt:
        summary.interrupted = True
        halt.stop("not sent: the run was interrupted", "interrupted")
        if progress.tty:
            sys.stderr.write("\n")
    summary.seconds = time.monotonic() - started
    summary.stopped = halt.cause
    if results is not None:
        results.close(order)
    position = {p: i for i, p in reversed(list(enumerate(order)))}
    slides.sort(key=lambda s: position[s.path])
    for s in slides:
        if not s.ok and not halt.stopped(s.code):
            print(f"error: {s.path}: {s.error}", file=sys.stderr)
    if halt.cause is not None:  # said once, however many slides it stopped
        print(f"stopped: {halt.cause.describe()}", file=sys.stderr)
    if len(files) > 1 or args.resume or summary.interrupted or halt.cause is not None:
        print(summary.line(), file=sys.stderr)
    shown = [
        dataclasses.replace(s, error=STOPPED_CELL) if not s.ok and halt.stopped(s.code) else s
        for s in slides
    ]
    _print_results(args, kind, view, slides, shown, summary, output)
    if summary.interrupted:
        return 130
    return 0 if summary.failed == 0 else 1


def _print_results(
    args: argparse.Namespace,
    kind: str,
    view: CliView,
    slides: Sequence[Slide],
    shown: Sequence[Slide],
    summary: batch.Summary,
    output: tuple[Path, str] | None,
) -> None:
    """The results on stdout: JSON or CSV as recorded, or the table (``shown``: slides a
    stopped batch did not count say so briefly, the reason having been said once)."""
    if args.json:
        doc: dict[str, Any] = {"service": args.service, "url": args.url, "kind": kind}
        if args.json == "-":
            doc["slides"] = [slide_record(s, view) for s in slides]
            doc["failed"] = sum(not s.ok for s in slides)
        else:
            doc["output"] = str(output[0]) if output else None
        doc["summary"] = summary.as_dict()
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    elif args.csv == "-":
        write_csv(slides, sys.stdout, view)
    else:
        print_table(
            shown,
            sys.stdout,
            view,
            earlier=summary.skipped,
            eosinophils=summary.eosinophils,
            source=str(output[0]) if output else None,
        )
    sys.stdout.flush()
