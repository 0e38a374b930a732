"""A refusal that holds for the whole batch (a used-up quota, rejected credentials) stops
it, and is said once: with the time the quota resets as a time of day, and how to resume.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fake_gateway import Answer, FakeGateway

from gateway.cli import detect
from gateway.cli.halt import Stop, time_of_day

QUOTA = "daily image quota of 2 reached for key:lab; it resets at 00:00 UTC, in {s} s"


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
    root = tmp_path / "slides"
    root.mkdir()
    for name in "abcdef":
        (root / f"{name}.jpg").write_text(name)
    return root


@pytest.fixture
def berlin(monkeypatch) -> Iterator[None]:
    """The local time zone one hour east of UTC in winter, as a lab in Berlin has it."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _quota_after(allowed: int) -> Callable[[str, int], Answer]:
    """Two slides counted, then the daily quota's refusal with the seconds to midnight."""

    def answer(request: str, n: int) -> Answer:
        if n <= allowed:
            doc = {"count": 1, "detections": [], "image": {"width": 8, "height": 6}}
            return 200, {**doc, "threshold": 0.3}, {}
        now = datetime.now(UTC)
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        seconds = int((midnight - now).total_seconds())
        refusal = {"error": QUOTA.format(s=seconds), "code": "quota_exceeded"}
        return 429, refusal, {"Retry-After": str(seconds)}

    return answer


def test_a_used_up_quota_is_said_once_with_its_reset_time(serve, slides, tmp_path, capsys, berlin):
    fake = serve({"name": "eos", "kind": "detection"}, _quota_after(2))
    out = tmp_path / "counts.csv"
    argv = [str(slides), "--url", fake.url, "--csv", str(out), "--jobs", "1"]
    assert detect.main(argv) == 1
    stdout, stderr = capsys.readouterr()
    assert len(fake.posts) == 3  # two counted, one refused, nothing sent after it
    assert stderr.count("daily image quota") == 1, stderr
    assert stderr.count(": stopped\n") == 4  # the progress lines of the slides not counted
    (stopped,) = [line for line in stderr.splitlines() if line.startswith("stopped: ")]
    # midnight UTC is 01:00 in Berlin in December; the gateway's "in N s" is not repeated
    assert "daily image quota of 2 reached for key:lab" in stopped
    assert stopped.endswith("it resets at 01:00 tomorrow (00:00 UTC)") or stopped.endswith(
        "it resets at 01:00 (00:00 UTC)"
    ), stopped
    assert " s (" not in stopped and "in " not in stopped.split(";")[-1]
    (summary,) = [line for line in stderr.splitlines() if line.startswith("summary: ")]
    assert summary.startswith("summary: 2 of 6 slides counted, 4 failed")
    assert "the batch stopped with 4 slides left: run the same command again with --resume" in (
        summary
    )
    assert "after 01:00" in summary
    assert not [line for line in stderr.splitlines() if line.startswith("error: ")]
    # the table says which slides were not counted, briefly; the reason was said above
    rows = [line for line in stdout.splitlines() if line.endswith("not counted: the batch stopped")]
    assert len(rows) == 4 and "daily image quota" not in stdout
    assert "6 slides, 4 failed, 2 eosinophils in total" in stdout


def test_the_summary_as_json_names_the_stop_and_the_reset(serve, slides, tmp_path, capsys):
    fake = serve({"name": "eos", "kind": "detection"}, _quota_after(0))
    out = tmp_path / "counts.jsonl"
    assert detect.main([str(slides), "--url", fake.url, "--json", str(out), "--jobs", "3"]) == 1
    stdout, stderr = capsys.readouterr()
    summary = json.loads(stdout)["summary"]
    assert summary["counted"] == 0 and summary["failed"] == 6 and summary["batch_counted"] == 0
    assert summary["stopped"].startswith("daily image quota of 2 reached")
    resets = datetime.fromisoformat(summary["resets_at"])
    assert (resets.hour, resets.minute) in ((0, 0), (23, 59)) and resets.tzinfo is not None
    assert stderr.count("daily image quota") == 1
    # up to three slides were in flight when the first refusal came: no more were sent
    assert len(fake.posts) <= 3


def test_rejected_credentials_stop_the_batch_once(serve, slides, capsys):
    def answer(request: str, n: int) -> Answer:
        return 401, {"error": "invalid API key", "code": "unauthenticated"}, {}

    fake = serve({"name": "eos"}, answer)
    assert detect.main([str(slides), "--url", fake.url, "--jobs", "1", "--api-key", "x"]) == 1
    stderr = capsys.readouterr().err
    assert len(fake.posts) == 1 and stderr.count("invalid API key") == 1
    assert "once the credentials are accepted" in stderr
    assert "--csv FILE or --json FILE" in stderr  # no result file: how to make one resumable


def test_time_of_day_is_local_with_utc_beside(berlin):
    now = datetime(2026, 12, 8, 14, 0, tzinfo=UTC)
    assert time_of_day(datetime(2026, 12, 9, 0, 0, 0, 400_000, tzinfo=UTC), now) == (
        "01:00 tomorrow (00:00 UTC)"
    )
    assert time_of_day(datetime(2026, 12, 8, 14, 0, 40, tzinfo=UTC), now) == (
        "15:00:40 (14:00:40 UTC)"
    )
    assert time_of_day(datetime(2026, 12, 11, 8, 0, tzinfo=UTC), now) == (
        "09:00 on Fri 11 Dec (08:00 UTC)"
    )


def test_the_gateways_own_reset_is_not_said_twice():
    when = datetime.now(UTC) + timedelta(hours=3)
    stop = Stop(QUOTA.format(s=10800) + " (HTTP 429, request r1)", "quota_exceeded", when)
    text = stop.describe()
    assert text.startswith("daily image quota of 2 reached for key:lab (HTTP 429, request r1)")
    assert text.count("resets") == 1 and "10800" not in text
    assert Stop("invalid API key", "unauthenticated").describe() == "invalid API key"
