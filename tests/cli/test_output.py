"""The CLI's result files: appended as slides finish, resumable after a crash, reordered."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from gateway import kinds
from gateway.cli.output import ResultFile, print_table
from gateway.cli.slides import Slide

CSV_FIELDS = kinds.get("detection").cli.csv_fields
CLASSIFY_CSV_FIELDS = kinds.get("classification").cli.csv_fields


def counted(path: str, count: int) -> Slide:
    return Slide(path=path, count=count, detections=[], width=10, height=8, seconds=0.5)


def failed(path: str) -> Slide:
    return Slide(path=path, error="the model is unavailable", code="backend_unavailable")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_resume_skips_counted_slides_and_survives_a_cut_last_line(tmp_path: Path, fmt) -> None:
    out = tmp_path / f"out.{fmt}"
    first = ResultFile(out, fmt, "detection", resume=False)
    first.append(counted("c.jpg", 3))
    first.append(failed("a.jpg"))
    first._fh.close()  # killed: no reordering happened
    with open(out, "a", encoding="utf-8") as fh:
        fh.write('"b.jpg",2,10,8' if fmt == "csv" else '{"path": "b.jpg", "cou')

    again = ResultFile(out, fmt, "detection", resume=True)
    assert again.done() == {"c.jpg"}  # the failed slide is sent again; the cut line is gone
    assert again.dropped == 1
    again.append(counted("a.jpg", 1))
    again.append(counted("b.jpg", 2))
    again.close(["a.jpg", "b.jpg", "c.jpg"])

    text = out.read_text(encoding="utf-8")
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert tuple(rows[0]) == CSV_FIELDS
    else:
        rows = [json.loads(line) for line in text.splitlines()]
    assert [r["path"] for r in rows] == ["a.jpg", "b.jpg", "c.jpg"]  # one each, input order
    assert [str(r["count"]) for r in rows] == ["1", "2", "3"]
    assert all(not r["error"] for r in rows)
    assert not (tmp_path / f"out.{fmt}.tmp").exists()


def test_rows_of_other_slides_are_kept_first(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    first = ResultFile(out, "jsonl", "detection", resume=False)
    first.append(counted("old.jpg", 4))
    first.close(["old.jpg"])
    again = ResultFile(out, "jsonl", "detection", resume=True)
    again.append(counted("new.jpg", 1))
    again.close(["new.jpg"])
    paths = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert paths == ["old.jpg", "new.jpg"]


def test_without_resume_the_file_starts_again(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    out.write_text("anything,at,all\n")
    rf = ResultFile(out, "csv", "detection", resume=False)
    assert rf.done() == set()
    rf.append(counted("a.jpg", 1))
    rf.close(["a.jpg"])
    assert out.read_text().splitlines()[0] == ",".join(CSV_FIELDS)


def test_resume_refuses_a_csv_with_other_columns(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    out.write_text(",".join(CLASSIFY_CSV_FIELDS) + "\n")
    with pytest.raises(ValueError, match="columns"):
        ResultFile(out, "csv", "detection", resume=True)


def test_classifier_rows_and_table(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    rf = ResultFile(out, "jsonl", "classification", resume=False)
    slide = Slide(path="a.jpg", label="eosinophilic", score=0.91, scores=[0.91, 0.09])
    rf.append(slide)
    rf.close(["a.jpg"])
    record = json.loads(out.read_text())
    assert record["label"] == "eosinophilic" and record["score"] == 0.91
    assert "count" not in record and "detections" not in record
    table = io.StringIO()
    print_table([slide, failed("b.jpg")], table, "classification")
    lines = table.getvalue().splitlines()
    assert lines[0].split() == ["file", "label", "score", "seconds", "error"]
    assert lines[1].split()[:3] == ["a.jpg", "eosinophilic", "0.91"]
    assert lines[-1] == "2 slides, 1 failed"
