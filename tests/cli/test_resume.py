"""``--resume``: a count is only a count at its threshold, so slides counted at another
threshold are counted again; without ``--threshold`` a batch goes on at the threshold it
was started at; the summary and the table total the whole batch, earlier runs included.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fake_gateway import Answer, FakeGateway

from gateway.cli import detect

SERVICE = {"name": "eos", "kind": "detection", "threshold": 0.3, "labels": ["eos"]}
CELLS = {"a": 5, "b": 7, "c": 9}


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeGateway]]:
    started: list[FakeGateway] = []

    def start(answer: Callable[[str, int], Answer]) -> FakeGateway:
        started.append(FakeGateway(SERVICE, answer))
        return started[-1]

    yield start
    for fake in started:
        fake.close()


@pytest.fixture
def slides(tmp_path: Path) -> Path:
    root = tmp_path / "slides"
    root.mkdir()
    for name in CELLS:
        (root / f"{name}.jpg").write_text(name)
    return root


def _threshold(request: str) -> float:
    query = parse_qs(urlsplit(request.split(" ")[0]).query)
    return float(query["threshold"][0]) if "threshold" in query else SERVICE["threshold"]


def counting(refuse: set[str] = frozenset()) -> Callable[[str, int], Answer]:
    """Fewer cells the higher the threshold, as a detector counts; ``refuse``: slides the
    quota refuses."""

    def answer(request: str, n: int) -> Answer:
        name = request[-1]
        if name in refuse:
            return (
                429,
                {"error": "daily quota used up", "code": "quota_exceeded"},
                {"Retry-After": "40000"},
            )
        threshold = _threshold(request)
        count = CELLS[name] - round(10 * threshold)
        doc = {"count": count, "detections": [], "image": {"width": 8, "height": 6}}
        return 200, {**doc, "threshold": threshold}, {}

    return answer


def _rows(path: Path) -> dict[str, dict[str, str]]:
    return {Path(r["path"]).stem: r for r in csv.DictReader(io.StringIO(path.read_text()))}


def test_another_threshold_counts_the_slides_again(serve, slides, tmp_path, capsys):
    fake = serve(counting())
    out = tmp_path / "counts.csv"
    argv = [str(slides), "--url", fake.url, "--csv", str(out), "--jobs", "1"]
    assert detect.main([*argv, "--threshold", "0.5"]) == 0
    assert {k: r["count"] for k, r in _rows(out).items()} == {"a": "0", "b": "2", "c": "4"}
    capsys.readouterr()

    assert detect.main([*argv, "--threshold", "0.2", "--resume"]) == 0
    stdout, stderr = capsys.readouterr()
    assert len(fake.posts) == 6  # every slide sent again, none skipped
    assert all(p.endswith("?threshold=0.2") for p in fake.posts[3:])
    assert "note: counting 3 slides again at threshold 0.2: " in stderr and "at 0.5" in stderr
    rows = _rows(out)
    assert [(k, r["count"], r["threshold"]) for k, r in rows.items()] == [
        ("a", "3", "0.2"),
        ("b", "5", "0.2"),
        ("c", "7", "0.2"),
    ]
    assert "summary: 3 of 3 slides counted, 0 failed, 0 retried, 3 counted again" in stderr
    assert "3 slides, 0 failed, 15 eosinophils in total" in stdout

    # the same threshold again: nothing to do, the whole batch still totalled
    assert detect.main([*argv, "--threshold", "0.2", "--resume"]) == 0
    stdout, stderr = capsys.readouterr()
    assert len(fake.posts) == 6
    assert "summary: 3 of 3 slides counted (0 in this run, 3 by earlier runs)" in stderr
    assert "15 eosinophils in total" in stderr
    assert f"3 slides, 0 failed, 15 eosinophils in total (3 counted by earlier runs, in {out})" in (
        stdout
    )


def test_a_stopped_batch_goes_on_at_its_own_threshold(serve, slides, tmp_path, capsys):
    out = tmp_path / "counts.jsonl"
    stopped = serve(counting(refuse={"c"}))
    first = [str(slides), "--url", stopped.url, "--json", str(out), "--jobs", "1"]
    assert detect.main([*first, "--threshold", "0.4"]) == 1
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert (summary["counted"], summary["failed"], summary["eosinophils"]) == (2, 1, 4)

    fake = serve(counting())
    again = [str(slides), "--url", fake.url, "--json", str(out), "--resume"]
    assert detect.main(again) == 0  # no --threshold: the batch's own, not the service's 0.3
    stdout, stderr = capsys.readouterr()
    assert fake.posts == ["/v1/services/eos:detect?threshold=0.4"]
    assert "note: going on at threshold 0.4, the threshold the slides in" in stderr
    summary = json.loads(stdout)["summary"]
    assert (summary["skipped"], summary["counted"], summary["batch_counted"]) == (2, 1, 3)
    assert summary["eosinophils"] == 4 + 5 and summary["recounted"] == 0
    assert "summary: 3 of 3 slides counted (1 in this run, 2 by earlier runs)" in stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(Path(r["path"]).stem, r["threshold"]) for r in records] == [
        ("a", 0.4),
        ("b", 0.4),
        ("c", 0.4),
    ]


def test_a_file_at_several_thresholds_needs_one_named(serve, slides, tmp_path, capsys):
    fake = serve(counting())
    out = tmp_path / "counts.csv"
    argv = [str(slides), "--url", fake.url, "--csv", str(out), "--jobs", "1"]
    assert detect.main([*argv, "--threshold", "0.5"]) == 0
    assert detect.main([str(slides / "a.jpg"), *argv[1:], "--threshold", "0.6", "--resume"]) == 0
    capsys.readouterr()
    sent = len(fake.posts)
    assert detect.main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "holds slides counted at thresholds 0.5, 0.6" in err and "--threshold" in err
    assert len(fake.posts) == sent  # nothing sent
    assert len(_rows(out)) == 3  # and the file kept whole
