"""Running a batch: slides sent by worker threads, results handled in the main thread.

Only the main thread writes output, so the result file and the progress lines need no
locks; the workers are daemon threads, so Ctrl-C ends the process at once instead of
waiting for uploads in flight (those slides have no line in the result file and are sent
again by ``--resume``).
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from gateway.cli.halt import BATCH_CODES, Stop
from gateway.cli.slides import Slide


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
        if not slide.ok:
            result = "stopped" if slide.code in BATCH_CODES else "failed"
        elif slide.label is not None:
            result = slide.label
        else:
            result = f"{slide.count}"
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

    def note(self, text: str) -> None:
        """A line of its own (a retry, say); on a terminal the bar is redrawn after it."""
        self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        self.stream.flush()


@dataclass
class Summary:
    """The whole batch, earlier runs of a ``--resume`` included, and this run's share."""

    slides: int = 0  # in the input
    skipped: int = 0  # counted by earlier runs (the result file), not sent again
    counted: int = 0  # in this run
    failed: int = 0
    retried: int = 0  # requests sent again (429, 503, 504, dropped connections)
    recounted: int = 0  # counted by an earlier run at another threshold, counted again
    threshold: float | None = None  # this run's, when it counts at one
    eosinophils: int | None = None  # in the whole batch; None: the service counts nothing
    seconds: float = 0.0
    interrupted: bool = False
    stopped: Stop | None = None  # a refusal that holds for every slide stopped the batch
    resumable: bool = False  # the results go to a file --resume can carry on from

    @property
    def slides_per_second(self) -> float:
        """Slides counted per second of this run: the rate a batch's remainder will go at."""
        return self.counted / self.seconds if self.seconds > 0 else 0.0

    @property
    def batch_counted(self) -> int:
        return self.skipped + self.counted

    @property
    def left(self) -> int:
        return self.slides - self.batch_counted

    def as_dict(self) -> dict[str, Any]:
        return {
            "slides": self.slides,
            "skipped": self.skipped,
            "counted": self.counted,
            "failed": self.failed,
            "not_done": self.slides - self.skipped - self.counted - self.failed,
            "batch_counted": self.batch_counted,
            "recounted": self.recounted,
            "threshold": self.threshold,
            "eosinophils": self.eosinophils,
            "retried": self.retried,
            "seconds": round(self.seconds, 3),
            "slides_per_second": round(self.slides_per_second, 3),
            "interrupted": self.interrupted,
            "stopped": None if self.stopped is None else self.stopped.describe(),
            "resets_at": (
                None
                if self.stopped is None or self.stopped.resets_at is None
                else self.stopped.resets_at.isoformat(timespec="seconds")
            ),
        }

    def line(self) -> str:
        counted = f"{self.batch_counted} of {self.slides} slides counted"
        if self.skipped:
            counted += f" ({self.counted} in this run, {self.skipped} by earlier runs)"
        text = f"summary: {counted}, {self.failed} failed, {self.retried} retried"
        if self.recounted:
            text += f", {self.recounted} counted again at threshold {self.threshold:g}"
        if self.eosinophils is not None:
            text += f"; {self.eosinophils} eosinophils in total"
        text += f"; {self.seconds:.1f} s, {self.slides_per_second:.2f} slides/s"
        if self.interrupted:
            text += "; interrupted: " + (
                "run the same command again with --resume to finish"
                if self.resumable
                else "run it again (with --csv FILE or --json FILE, --resume finishes a batch)"
            )
        elif self.stopped is not None:
            slides = "slide" if self.left == 1 else "slides"
            hint = self.stopped.resume_hint(self.resumable)
            text += f"; the batch stopped with {self.left} {slides} left: {hint}"
        return text


class Interrupts:
    """Ctrl-C and SIGTERM as KeyboardInterrupt, but never while a result is being kept.

    A slide whose progress line was printed must be in the result file: the signal is
    held while :meth:`shield` is active and raised as soon as it ends.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.shielded = self.pending = False
        self.previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.shielded:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[None]:
        try:
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
        try:
            yield
        finally:
            for sig, handler in self.previous.items():
                signal.signal(sig, handler)

    @contextmanager
    def shield(self) -> Iterator[None]:
        self.shielded = True
        try:
            yield
        finally:
            self.shielded = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


def run(
    items: Sequence[Any],
    work: Callable[[Any], Slide],
    threads: int,
    done: Callable[[Slide], None],
    notes: queue.Queue[str] | None = None,
    note: Callable[[str], None] | None = None,
) -> None:
    """``work`` every item on ``threads`` threads (0: in this one); ``done`` each result here.

    ``notes`` is drained into ``note`` while waiting, so workers can tell a person
    something (a retry) without writing to the terminal themselves.
    """
    if threads < 1:
        for item in items:
            _drain(notes, note)
            done(work(item))
        _drain(notes, note)
        return
    todo: queue.Queue[Any] = queue.Queue()
    for item in items:
        todo.put(item)
    results: queue.Queue[Slide] = queue.Queue()

    def worker() -> None:
        while True:
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            results.put(work(item))

    for i in range(min(threads, len(items))):
        threading.Thread(target=worker, name=f"upload-{i}", daemon=True).start()
    for _ in items:
        while True:
            _drain(notes, note)
            try:
                slide = results.get(timeout=0.2)
                break
            except queue.Empty:
                continue
        done(slide)
    _drain(notes, note)


def _drain(notes: queue.Queue[str] | None, note: Callable[[str], None] | None) -> None:
    while notes is not None and note is not None:
        try:
            note(notes.get_nowait())
        except queue.Empty:
            return
