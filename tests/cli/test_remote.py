"""``detect --url`` against a small local HTTP server of the test's that answers like the
gateway would: classifiers, retries, a quota that stops the batch, unreachable gateways.

The CLI runs in this process (``gateway.cli.detect.main``); the server counts what it
was sent, so the tests can assert exactly how many requests a batch made.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_gateway import Answer, FakeGateway

from gateway.cli import detect


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeGateway]]:
    started: list[FakeGateway] = []

    def start(service: dict, answer: Callable[[str, int], Answer]) -> FakeGateway:
        started.append(FakeGateway(service, answer))
        return started[-1]

    yield start
    for fake in started:
        fake.close()


@pytest.fixture
def slides(tmp_path: Path) -> Path:
    """Three files; the fake gateway answers from their contents, it decodes nothing."""
    root = tmp_path / "slides"
    root.mkdir()
    for name in ("a", "b", "c"):
        (root / f"{name}.jpg").write_text(name)
    return root


def classify_answer(request: str, n: int) -> Answer:
    if request.endswith(" b") and n <= 2:  # b is refused once: the service is busy
        return 503, {"error": "busy", "code": "backend_unavailable"}, {"Retry-After": "0"}
    label = {"a": "eosinophilic", "b": "normal", "c": "eosinophilic"}[request[-1]]
    score = {"a": 0.91, "b": 0.77, "c": 0.64}[request[-1]]
    return 200, {"label": label, "score": score, "scores": [score, 1 - score]}, {}


def test_a_classifier_prints_label_and_score(serve, slides, tmp_path, capsys) -> None:
    fake = serve({"name": "eos-class", "kind": "classification"}, classify_answer)
    out = tmp_path / "labels.csv"
    argv = [str(slides), "--url", fake.url, "--service", "eos-class", "--csv", str(out)]
    assert detect.main([*argv, "--jobs", "1"]) == 0
    stdout, stderr = capsys.readouterr()
    table = [line.split() for line in stdout.splitlines()]
    assert table[0] == ["file", "label", "score", "seconds", "error"]
    assert [row[1:3] for row in table[1:4]] == [
        ["eosinophilic", "0.91"],
        ["normal", "0.77"],
        ["eosinophilic", "0.64"],
    ]
    assert table[4] == ["3", "slides,", "0", "failed"]
    assert sorted(fake.posts) == ["/v1/services/eos-class:classify"] * 4  # b sent twice
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(Path(r["path"]).name, r["label"], r["score"]) for r in rows] == [
        ("a.jpg", "eosinophilic", "0.91"),
        ("b.jpg", "normal", "0.77"),
        ("c.jpg", "eosinophilic", "0.64"),
    ]
    assert "retry: " in stderr and "busy (HTTP 503" in stderr
    assert "summary: 3 of 3 slides counted, 0 failed, 1 retried" in stderr


def detect_answer(request: str, n: int) -> Answer:
    count = {"a": 1, "b": 2, "c": 3}[request[-1]]
    dets = [{"box": [0, 0, 4, 4], "score": 0.9, "label": "eos"}] * count
    doc = {"count": count, "detections": dets, "image": {"width": 8, "height": 6}}
    return 200, {**doc, "threshold": 0.5}, {}


def test_a_service_without_kind_is_a_detector(serve, slides, capsys) -> None:
    fake = serve({"name": "eos"}, detect_answer)
    assert detect.main([str(slides), "--url", fake.url, "--json", "--jobs", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "detection"
    assert [(Path(s["path"]).name, s["count"]) for s in doc["slides"]] == [
        ("a.jpg", 1),
        ("b.jpg", 2),
        ("c.jpg", 3),
    ]  # input order, whatever order they finished in
    assert doc["summary"]["counted"] == 3 and doc["summary"]["retried"] == 0
    assert fake.posts == ["/v1/services/eos:detect"] * 3


def test_a_used_up_quota_stops_the_batch(serve, slides, tmp_path, capsys) -> None:
    def answer(request: str, n: int) -> Answer:
        refusal = {"error": "daily quota of 0 images reached", "code": "quota_exceeded"}
        return 429, refusal, {"Retry-After": "30000"}

    fake = serve({"name": "eos", "kind": "detection"}, answer)
    out = tmp_path / "out.jsonl"
    rc = detect.main([str(slides), "--url", fake.url, "--jobs", "1", "--json", str(out)])
    assert rc == 1
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert (summary["counted"], summary["failed"], summary["retried"]) == (0, 3, 0)
    assert len(fake.posts) == 1  # not waited for until midnight, and nothing more sent
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["code"] for r in records] == ["quota_exceeded"] * 3
    assert records[1]["error"].startswith("not sent: the batch stopped: daily quota")


def test_retries_give_up_after_the_limit(serve, slides, capsys) -> None:
    def answer(request: str, n: int) -> Answer:
        if request.endswith(" a"):
            return (
                504,
                {"error": "the model timed out", "code": "backend_timeout"},
                {"Retry-After": "0"},
            )
        return detect_answer(request, n)

    fake = serve({"name": "eos"}, answer)
    rc = detect.main([str(slides), "--url", fake.url, "--json", "--retries", "2"])
    assert rc == 1
    doc = json.loads(capsys.readouterr().out)
    a = next(s for s in doc["slides"] if s["path"].endswith("a.jpg"))
    assert a["code"] == "backend_timeout" and a["retries"] == 2
    assert (doc["summary"]["counted"], doc["summary"]["failed"]) == (2, 1)
    assert doc["summary"]["retried"] == 2
    assert len(fake.posts) == 2 + 3  # b and c once, a three times


def test_unknown_service_and_unreachable_gateway_are_usage_errors(serve, slides, capsys) -> None:
    fake = serve({"name": "eos"}, detect_answer)
    assert detect.main([str(slides), "--url", fake.url, "--service", "nope"]) == 2
    assert "unknown service" in capsys.readouterr().err
    fake.close()
    assert detect.main([str(slides), "--url", fake.url, "--retries", "0"]) == 2
    assert "cannot reach the gateway" in capsys.readouterr().err
    assert fake.posts == []


def test_resume_needs_a_result_file(slides, capsys) -> None:
    assert detect.main([str(slides), "--json", "--resume"]) == 2
    assert "--resume needs a result file" in capsys.readouterr().err
    assert detect.main(["--json", str(slides / "a.jpg"), str(slides)]) == 2
    assert "would write into a slide" in capsys.readouterr().err
