"""Options of ``detect`` that only apply with ``--url`` say so when named without it,
instead of being taken silently; with ``--url`` they are used, without a word."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from synthetic import make_slide

from gateway.cli import detect


def _slide(tmp_path: Path) -> Path:
    path = tmp_path / "s.png"
    Image.fromarray(make_slide(320, 240, [(100, 100, 44)], seed=1)).save(path)
    return path


def test_jobs_without_url_says_it_has_no_effect(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    slide = str(_slide(tmp_path))
    assert detect.main([slide, "--jobs", "8", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "note: --jobs has no effect without --url" in err
    assert json.loads(out)["slides"][0]["error"] is None  # and the slide is counted
    assert detect.main([slide, "--jobs", "2", "--retries", "3", "--json"]) == 0
    assert "note: --jobs, --retries have no effect without --url" in capsys.readouterr().err
    assert detect.main([slide, "--json"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_remote_options_keep_their_defaults():
    args = detect.parser().parse_args(["x.jpg", "--url", "gw.example:8080", "--jobs", "2"])
    assert detect._remote_options(args) is None  # with --url: nothing to say
    assert args.url == "http://gw.example:8080"
    assert (args.jobs, args.retries, args.timeout) == (2, 8, 300.0)
    assert args.max_wait == detect.REMOTE_DEFAULTS["max_wait"]
