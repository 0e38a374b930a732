"""``python -m gateway detect``: real subprocesses, in-process and against a real gateway.

The counts must equal the API's for the same slide and threshold, a bad slide must fail
alone with its reason (exit status 1), and the outputs (table, JSON, CSV, pictures) must
hold what they promise.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, cli_argv, cli_env, image_answer, run_cli, sha, today
from PIL import Image
from procs import start_gateway, start_model_server, write_config
from synthetic import make_slide

from gateway.usage.sqlite_store import SQLiteStore

# Every test here runs the gateway (or the CLI) as its own process.
pytestmark = pytest.mark.process

CELLS_A = [(100, 90, 44), (260, 200, 46), (420, 110, 42)]
CELLS_B = [(80, 80, 44), (300, 150, 44)]
API_KEY = "cli-test-key-0123456789abcdef"


def _save(path: Path, cells, size=(520, 300), fmt="JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_slide(size[0], size[1], cells, seed=len(cells))).save(
        path, fmt, quality=95
    )
    return path


@pytest.fixture
def slides(tmp_path: Path) -> Path:
    root = tmp_path / "slides"
    _save(root / "a.jpg", CELLS_A)
    _save(root / "deeper" / "b.png", CELLS_B, fmt="PNG")
    (root / "readme.txt").write_text("not a slide; skipped by suffix")
    return root


def test_folder_in_process_json(slides: Path) -> None:
    r = run_cli("detect", str(slides), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # stdout holds the document and nothing else
    by_name = {Path(s["path"]).name: s for s in doc["slides"]}
    assert set(by_name) == {"a.jpg", "b.png"}  # recursive, filtered by image suffix
    assert by_name["a.jpg"]["count"] == 3 and by_name["b.png"]["count"] == 2
    a = by_name["a.jpg"]
    assert (a["width"], a["height"]) == (520, 300) and a["error"] is None
    assert len(a["detections"]) == 3 and isinstance(a["seconds"], float)
    assert all(set(d) == {"box", "score", "label"} for d in a["detections"])
    assert doc["failed"] == 0
    assert "[2/2]" in r.stderr  # progress for more than one slide, on stderr


def test_counts_equal_the_api_in_both_modes(slides: Path) -> None:
    digest = sha(API_KEY)
    gw = start_gateway({"auth": {"api_keys": [{"id": "cli", "sha256": digest}]}})
    try:
        files = sorted(p for p in slides.rglob("*") if p.suffix in (".jpg", ".png"))
        for threshold in ("0.3", "0.8"):
            # 0.3 is the service's own threshold: the API is asked without one.
            query = "" if threshold == "0.3" else f"?threshold={threshold}"
            url = f"{gw.url}/v1/services/eos:detect{query}"
            api = {
                p.name: image_answer(url, p.read_bytes(), headers={"X-API-Key": API_KEY})
                for p in files
            }
            local = run_cli("detect", str(slides), "--json", "--threshold", threshold)
            remote = run_cli(
                "detect",
                str(slides),
                "--json",
                "--threshold",
                threshold,
                "--url",
                gw.url,
                "--api-key",
                API_KEY,
            )
            assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
            for out in (local, remote):
                got = {Path(s["path"]).name: s for s in json.loads(out.stdout)["slides"]}
                for name, answer in api.items():
                    assert got[name]["count"] == answer["count"], (name, threshold)
                    assert got[name]["detections"] == answer["detections"]
        log = gw.log_text()
    finally:
        gw.stop()
    assert '"principal":"key:cli"' in log and API_KEY not in log


def test_bad_slides_fail_alone_with_their_reason(slides: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)  # JPEG magic, no image
    notes = tmp_path / "notes.png"
    notes.write_bytes(b"plain text")
    missing = tmp_path / "missing.jpg"
    table = tmp_path / "out.csv"
    r = run_cli("detect", str(slides), str(broken), str(notes), str(missing), "--csv", str(table))
    assert r.returncode == 1
    assert f"{broken}: " in r.stderr and "corrupt" in r.stderr
    assert f"{notes}: " in r.stderr and "not a supported image" in r.stderr
    assert f"{missing}: " in r.stderr and "cannot read" in r.stderr
    rows = {Path(row["path"]).name: row for row in csv.DictReader(io.StringIO(table.read_text()))}
    assert rows["a.jpg"]["count"] == "3" and rows["b.png"]["count"] == "2"
    assert rows["broken.jpg"]["code"] == "undecodable_image" and rows["broken.jpg"]["count"] == ""
    assert rows["notes.png"]["code"] == "unsupported_image"
    assert rows["missing.jpg"]["code"] == "unreadable"
    assert "5 slides, 3 failed, 5 eosinophils in total" in r.stdout


def test_remote_failures_carry_the_gateways_reason(slides: Path) -> None:
    digest = sha(API_KEY)
    gw = start_gateway({"auth": {"api_keys": [{"id": "cli", "sha256": digest}]}})
    try:
        r = run_cli("detect", str(slides / "a.jpg"), "--url", gw.url, "--api-key", "wrong-key")
        ok = run_cli(
            "detect", str(slides / "a.jpg"), "--url", gw.url, "--id-token", "not.a.token", "--json"
        )
    finally:
        gw.stop()
    assert r.returncode == 1 and "invalid API key" in r.stderr and "HTTP 401" in r.stderr
    assert ok.returncode == 1
    assert json.loads(ok.stdout)["slides"][0]["code"] == "unauthenticated"


def test_render_writes_annotated_pictures(slides: Path, tmp_path: Path) -> None:
    out = tmp_path / "renders"
    r = run_cli("detect", str(slides), "--render", str(out), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    a = Image.open(out / "a.jpg")
    b = Image.open(out / "deeper" / "b.jpg")  # the folder structure is kept
    assert a.format == "JPEG" and a.size == (520, 300) and b.size == (520, 300)
    assert {Path(s["render"]).name for s in doc["slides"]} == {"a.jpg", "b.jpg"}
    # Each box is drawn: the box colour appears on the outline of every detection.
    pixels = a.convert("RGB").load()
    for det in next(s for s in doc["slides"] if s["path"].endswith("a.jpg"))["detections"]:
        x0, y0, x1, y1 = (round(v) for v in det["box"])
        edge = [pixels[x, y0 + 1] for x in range(x0 + 3, x1 - 3)]
        # the slide is pink-purple (red, blue > green); the box outline is green
        assert sum(g > r + 20 and g > b + 15 for r, g, b in edge) > len(edge) // 2
    # The count is written in the top-left corner on a dark band.
    corner = [pixels[x, 2] for x in range(2, 40)]
    assert all(max(p) < 60 for p in corner)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("detect", str(empty))
    assert r.returncode == 2 and "no images found" in r.stderr
    r = run_cli("detect", str(empty), "--service", "nope")
    assert r.returncode == 2
    slide = _save(tmp_path / "s.jpg", CELLS_B)
    r = run_cli("detect", str(slide), "--service", "nope")
    assert r.returncode == 2 and "unknown service" in r.stderr
    r = run_cli("detect", str(slide), "--threshold", "1.5")
    assert r.returncode == 2 and "between 0 and 1" in r.stderr


def test_single_slide_table_has_no_progress(tmp_path: Path) -> None:
    slide = _save(tmp_path / "one.jpg", CELLS_A)
    r = run_cli("detect", str(slide))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    header, row, summary = r.stdout.strip().splitlines()
    assert header.split() == ["file", "count", "width", "height", "seconds", "error"]
    assert row.split()[:4] == [str(slide), "3", "520", "300"]
    assert summary == "1 slides, 0 failed, 3 eosinophils in total"


# --- large batches against a running gateway --------------------------------------------

BATCH_KEY = "cli-batch-key-9f8e7d6c5b4a"


def _batch(root: Path, n: int) -> list[tuple[Path, int]]:
    """``n`` slides named in input order, alternating 3 and 2 cells: (file, its count)."""
    made = []
    for i in range(n):
        if i % 2 == 0:
            made.append((_save(root / f"s{i:02d}.jpg", CELLS_A), 3))
        else:
            made.append((_save(root / f"s{i:02d}.png", CELLS_B, fmt="PNG"), 2))
    return made


def _summary(stderr: str) -> str:
    (line,) = [x for x in stderr.splitlines() if x.startswith("summary: ")]
    return line


def _csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def _quota_config(daily_images: int) -> dict:
    digest = sha(BATCH_KEY)
    return {
        "auth": {"required": True, "api_keys": [{"id": "batch", "sha256": digest}]},
        "quotas": {"default": {"daily_images": daily_images}},
    }


def test_a_quota_stops_the_batch_and_resume_finishes_it(tmp_path: Path) -> None:
    made = _batch(tmp_path / "slides", 6)
    workdir = tmp_path / "gw"
    workdir.mkdir()
    gw = start_gateway(_quota_config(3), workdir=workdir)
    out = tmp_path / "counts.csv"
    slides = str(tmp_path / "slides")
    argv = ["detect", slides, "--url", gw.url, "--api-key", BATCH_KEY, "--csv", str(out)]
    try:
        first = run_cli(*argv, "--jobs", "2", "--max-wait", "60")  # not: wait for midnight
        first_rows = _csv_rows(out)
        write_config(_quota_config(100), workdir)  # more; the same store keeps today's usage
        gw.stop()
        gw.start()  # the same working directory and port, the new configuration
        second = run_cli(*argv, "--jobs", "2", "--resume")
    finally:
        gw.stop()

    assert first.returncode == 1, first.stderr
    assert "summary: 3 of 6 slides counted, 3 failed, 0 retried" in _summary(first.stderr)
    assert first.stderr.count("daily image quota") == 1, first.stderr  # said once
    assert "resets at " in first.stderr and "--resume after " in _summary(first.stderr)
    rows = first_rows
    assert [r["path"] for r in rows] == [str(p) for p, _ in made]  # input order
    counted = [r for r in rows if not r["error"]]
    assert len(counted) == 3
    assert all(r["count"] == str(dict((str(p), c) for p, c in made)[r["path"]]) for r in counted)
    assert {r["code"] for r in rows if r["error"]} == {"quota_exceeded"}

    assert second.returncode == 0, second.stderr
    assert "summary: 6 of 6 slides counted (3 in this run, 3 by earlier runs), 0 failed" in (
        _summary(second.stderr)
    )
    rows = _csv_rows(out)
    assert [(r["path"], r["count"], r["error"]) for r in rows] == [
        (str(p), str(c), "") for p, c in made
    ]
    # Every slide was counted by the gateway exactly once: none sent again after success.
    store = SQLiteStore(workdir / ".gateway" / "usage.sqlite3")
    daily = store.daily("key:batch", "eos", today())
    assert daily["images"] == 6


def _read_until(stream, wanted, seen: list[str]) -> None:
    """Lines of ``stream`` into ``seen`` until one satisfies ``wanted``."""
    for line in stream:
        seen.append(line)
        if wanted(line):
            return
    raise AssertionError("the CLI ended first:\n" + "".join(seen))


def _popen_cli(*args: str) -> subprocess.Popen:
    """``python -m gateway detect ARGS``, running, its output read as it comes."""
    return subprocess.Popen(
        cli_argv("detect", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=REPO,
    )


def test_a_model_server_outage_is_ridden_out_and_ctrl_c_resumes(tmp_path: Path) -> None:
    made = _batch(tmp_path / "slides", 10)
    expected = [{"path": str(p), "count": c} for p, c in made]
    control = tmp_path / "control.json"
    control.write_text(json.dumps({"delay_s": 0.5}))
    model = start_model_server(control_file=control)
    gw = None
    try:
        gw = start_gateway(
            {"services": {"eos": {"backend": {"url": model.url, "model": "eos", "timeout_s": 20}}}}
        )
        common = [str(tmp_path / "slides"), "--url", gw.url]

        # The model server goes away after the third slide and comes back once the CLI
        # has seen the gateway's 503: the batch waits and retries, nothing fails.
        out = tmp_path / "outage.jsonl"
        cli = _popen_cli(*common, "--json", str(out), "--jobs", "2", "--retries", "40")
        seen: list[str] = []
        _read_until(cli.stderr, lambda line: line.startswith("[3/10]"), seen)
        model.stop()
        _read_until(cli.stderr, lambda line: line.startswith("retry: "), seen)
        model.start()
        rest, err = cli.communicate(timeout=600)
        summary = json.loads(rest)["summary"]
        assert cli.returncode == 0, "".join(seen) + err
        assert any("HTTP 503" in line for line in seen if line.startswith("retry: "))
        assert (summary["counted"], summary["failed"], summary["skipped"]) == (10, 0, 0)
        assert summary["retried"] >= 1 and summary["interrupted"] is False
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [{"path": r["path"], "count": r["count"]} for r in records] == expected
        assert all(r["error"] is None for r in records)
        assert sum(r["retries"] for r in records) == summary["retried"]

        # Ctrl-C after two slides, then a line cut off as if the machine died while
        # writing it: --resume sends only what is missing and leaves one line a slide.
        out = tmp_path / "interrupted.jsonl"
        control.write_text(json.dumps({"delay_s": 1.0}))
        cli = _popen_cli(*common, "--json", str(out), "--jobs", "1")
        seen = []
        _read_until(cli.stderr, lambda line: line.startswith("[2/10]"), seen)
        cli.send_signal(signal.SIGINT)
        rest, err = cli.communicate(timeout=120)
        assert cli.returncode == 130, err
        first = json.loads(rest)["summary"]
        assert first["interrupted"] is True and "--resume" in err
        done = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(done) == first["counted"] and 2 <= len(done) < 10, err
        assert [r["path"] for r in done] == [e["path"] for e in expected[: len(done)]]
        with open(out, "a") as fh:
            fh.write('{"path": "' + expected[-1]["path"] + '", "cou')
        control.write_text("{}")
        again = run_cli("detect", *common, "--json", str(out), "--jobs", "3", "--resume")
        assert again.returncode == 0, again.stderr
        second = json.loads(again.stdout)["summary"]
        assert second["skipped"] == len(done) and second["counted"] == 10 - len(done)
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [{"path": r["path"], "count": r["count"]} for r in records] == expected
    finally:
        if gw is not None:
            gw.stop()
        model.stop()
