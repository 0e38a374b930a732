"""``python -m gateway detect``: real subprocesses, in-process and against a real gateway.

The counts must equal the API's for the same slide and threshold, a bad slide must fail
alone with its reason (exit status 1), and the outputs (table, JSON, CSV, pictures) must
hold what they promise.
"""

from __future__ import annotations

import csv
import io
import json
import urllib.request
from pathlib import Path

import pytest
from helpers import run_cli, sha
from PIL import Image
from procs import start_gateway
from synthetic import make_slide

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


def _api(url: str, data: bytes, headers: dict[str, str] | None = None) -> dict:
    req = urllib.request.Request(
        f"{url}/v1/services/eos:detect",
        data=data,
        headers={"Content-Type": "application/octet-stream", **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


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
            api = {
                p.name: _api(f"{gw.url}", p.read_bytes(), {"X-API-Key": API_KEY})
                if threshold == "0.3"
                else _api_threshold(gw.url, p.read_bytes(), threshold)
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


def _api_threshold(url: str, data: bytes, threshold: str) -> dict:
    req = urllib.request.Request(
        f"{url}/v1/services/eos:detect?threshold={threshold}",
        data=data,
        headers={"Content-Type": "application/octet-stream", "X-API-Key": API_KEY},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


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
