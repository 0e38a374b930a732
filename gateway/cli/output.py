"""The CLI's outputs: the table on stdout, and the result file (CSV or JSON Lines).

The result file is written to as each slide finishes (one line, flushed), so an
interrupted run keeps everything it counted and ``--resume`` can skip those slides next
time.  When a run ends (Ctrl-C too) the file is rewritten, atomically, with one line per
slide in input order: rows of finished slides are appended in the order they finish,
which with concurrent uploads is not the order a person reads a folder in.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from gateway import kinds
from gateway.cli.slides import Slide
from gateway.config import DEFAULT_KIND
from gateway.kinds.base import CliView

# The slide's fields each image route fills; a record leaves out those of the other routes.
_ROUTE_FIELDS = {
    ":detect": ("count", "detections", "threshold"),
    ":classify": ("label", "score", "scores"),
}


_FILES_WRITTEN = ("render", "geojson")


def cli_view(kind: str | CliView) -> CliView:
    """What the command line shows of a kind, given by name or by its view already."""
    if isinstance(kind, CliView):
        return kind
    found = kinds.get(kind)
    if found is None or found.cli is None:
        raise ValueError(f"the kind {kind!r} has no command-line view")
    return found.cli


def csv_fields(kind: str | CliView) -> tuple[str, ...]:
    return cli_view(kind).csv_fields


def slide_record(slide: Slide, kind: str | CliView) -> dict[str, Any]:
    """A slide as JSON: the fields of its service's route; the files written (``render``,
    ``geojson``) only when written."""
    route = cli_view(kind).route
    drop = {f for r, fields in _ROUTE_FIELDS.items() if r != route for f in fields}
    return {
        k: v
        for k, v in dataclasses.asdict(slide).items()
        if k not in drop and (k not in _FILES_WRITTEN or v)
    }


def csv_row(slide: Slide, fields: Sequence[str]) -> dict[str, str]:
    row = {}
    for f in fields:
        v = getattr(slide, f)
        row[f] = "" if v is None else (f"{v:.3f}" if f == "seconds" else str(v))
    return row


def write_csv(slides: Iterable[Slide], out: TextIO, kind: str | CliView = DEFAULT_KIND) -> None:
    fields = csv_fields(kind)
    writer = csv.writer(out)
    writer.writerow(fields)
    for s in slides:
        writer.writerow(csv_row(s, fields).values())


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def print_table(
    slides: Sequence[Slide],
    out: TextIO,
    kind: str | CliView = DEFAULT_KIND,
    earlier: int = 0,
    eosinophils: int | None = None,
    source: str | None = None,
) -> None:
    """This run's slides, one a row; the last line totals the whole batch: ``earlier``
    slides counted by earlier runs (in ``source``) and ``eosinophils`` in all, when given."""
    view = cli_view(kind)
    columns = ["file", *view.columns, "error"]
    rows = [columns] + [
        [s.path, *(_fmt(getattr(s, c)) for c in view.columns), s.error or ""] for s in slides
    ]
    n = len(columns) - 1
    widths = [max(len(r[i]) for r in rows) for i in range(n)]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, n)]
        out.write(("  ".join(cells) + ("  " + r[n] if r[n] else "")).rstrip() + "\n")
    failed = sum(not s.ok for s in slides)
    line = f"{len(slides) + earlier} slides, {failed} failed"
    if view.counts:
        if eosinophils is None:
            eosinophils = sum(s.count or 0 for s in slides if s.ok)
        line += f", {eosinophils} eosinophils in total"
    if earlier:
        where = f", in {source}" if source else ""
        line += f" ({earlier} counted by earlier runs{where})"
    out.write(line + "\n")


class ResultFile:
    """``--csv FILE`` or ``--json FILE`` (JSON Lines): appended to, resumable, reordered.

    A row counts as done when its slide was counted (no error); failed slides are sent
    again on resume.  A last line without its newline (the process was killed while
    writing it) is cut off before anything is appended.
    """

    def __init__(self, path: Path, fmt: str, kind: str | CliView, resume: bool) -> None:
        self.path, self.fmt = path, fmt
        self.view = cli_view(kind)
        self.fields = self.view.csv_fields
        self.rows: dict[str, dict[str, Any]] = {}
        self.dropped = 0  # lines of an earlier run that could not be read
        if resume and path.exists():
            self._read()
            self._fh = open(path, "a", newline="", encoding="utf-8")
        else:
            self._fh = open(path, "w", newline="", encoding="utf-8")
        if fmt == "csv" and self._fh.tell() == 0:
            self._write_csv(self.fields)

    def _read(self) -> None:
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(keep)
            self.dropped += 1
        text = data[:keep].decode("utf-8", errors="replace")
        if self.fmt == "csv":
            lines = list(csv.reader(io.StringIO(text, newline="")))
            if not lines:
                return
            if tuple(lines[0]) != self.fields:
                raise ValueError(
                    f"{self.path} has the columns {','.join(lines[0])}, not "
                    f"{','.join(self.fields)}; resume into a file this command wrote"
                )
            for line in lines[1:]:
                if len(line) == len(self.fields):
                    self._keep(dict(zip(self.fields, line, strict=True)))
                else:
                    self.dropped += 1
            return
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict) and isinstance(record.get("path"), str):
                self._keep(record)
            elif line.strip():
                self.dropped += 1

    def _keep(self, record: dict[str, Any]) -> None:
        self.rows.pop(record["path"], None)  # the latest row of a path is the one that holds
        self.rows[record["path"]] = record

    def done(self) -> set[str]:
        """Paths already counted by an earlier run."""
        if self.fmt == "csv":
            return {p for p, r in self.rows.items() if not r.get("error")}
        return {p for p, r in self.rows.items() if r.get("error") is None}

    def number(self, path: str, field: str) -> float | None:
        """A row's number (``count``, ``threshold``) as a number, whichever the format."""
        value = self.rows.get(path, {}).get(field)
        if isinstance(value, bool) or value in (None, ""):
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            return None

    def append(self, slide: Slide) -> None:
        if self.fmt == "csv":
            record: dict[str, Any] = csv_row(slide, self.fields)
            self._write_csv(record.values())
        else:
            record = slide_record(slide, self.view)
            self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        self._keep(record)

    def _write_csv(self, values: Iterable[Any], fh: TextIO | None = None) -> None:
        csv.writer(fh or self._fh).writerow(list(values))

    def close(self, order: Sequence[str]) -> None:
        """One line per slide: rows of slides not in ``order`` first, then ``order``'s."""
        self._fh.close()
        wanted = set(order)
        records = [r for p, r in self.rows.items() if p not in wanted]
        records += [self.rows[p] for p in order if p in self.rows]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            if self.fmt == "csv":
                self._write_csv(self.fields, fh)
                for r in records:
                    self._write_csv((r.get(f, "") for f in self.fields), fh)
            else:
                for r in records:
                    fh.write(json.dumps(r) + "\n")
        os.replace(tmp, self.path)
