"""``detect --geojson DIR``: one GeoJSON file a slide, the same whether the slides are
counted here or by a gateway (``--url``), every box the one the JSON result holds.

The gateway of the ``--url`` run is the real one (the route table, the ``:detect``
handler, the embedded detector) served by a WSGI server on a thread of this process.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask, request
from helpers import SAMPLE_SLIDE
from PIL import Image
from shapely.geometry import shape
from synthetic import make_slide
from werkzeug.serving import make_server

from gateway import runtime
from gateway.catalog import parse_config
from gateway.cli import detect
from gateway.rest.app import handle


@pytest.fixture
def slides(tmp_path: Path) -> Path:
    root = tmp_path / "slides"
    (root / "deeper").mkdir(parents=True)
    shutil.copy(SAMPLE_SLIDE, root / "sample.jpg")
    cells = [(80, 80, 44), (300, 150, 44)]
    Image.fromarray(make_slide(520, 300, cells, seed=2)).save(root / "deeper" / "b.png")
    return root


@pytest.fixture
def gateway_url(monkeypatch) -> Iterator[str]:
    monkeypatch.delenv("K_SERVICE", raising=False)
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    gw = runtime.build_gateway(parse_config({"usage": {"enabled": False}}))
    monkeypatch.setattr(runtime, "_gateway", gw)
    app = Flask(__name__)
    app.add_url_rule("/<path:path>", "all", lambda path: handle(request), methods=["GET", "POST"])
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _run(capsys, *argv: str) -> dict:
    assert detect.main(list(argv)) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _check_files(doc: dict, slides: Path, out: Path) -> dict[str, dict]:
    """Every slide's file read back with shapely against the slide's JSON record."""
    files = {}
    for record in doc["slides"]:
        rel = Path(record["path"]).relative_to(slides)
        target = out / rel.with_suffix(".geojson")
        assert record["geojson"] == str(target)
        geo = json.loads(target.read_text())
        assert geo["type"] == "FeatureCollection" and geo["count"] == record["count"]
        assert geo["image"] == {"width": record["width"], "height": record["height"]}
        assert len(geo["features"]) == len(record["detections"]) == record["count"] > 0
        for feature, det in zip(geo["features"], record["detections"], strict=True):
            polygon = shape(feature["geometry"])
            assert polygon.is_valid and polygon.exterior.is_closed
            assert list(polygon.bounds) == pytest.approx(det["box"])
            props = feature["properties"]
            assert props["objectType"] == "detection"
            assert props["classification"]["name"] == det["label"] == "eos"
            assert props["measurements"] == {"score": det["score"]}
        files[str(rel.with_suffix(".geojson"))] = geo
    return files


def test_geojson_files_in_process_and_through_a_gateway_agree(
    slides, tmp_path, gateway_url, capsys
):
    here, there = tmp_path / "here", tmp_path / "there"
    local = _run(capsys, str(slides), "--geojson", str(here), "--json")
    remote = _run(
        capsys, str(slides), "--url", gateway_url, "--geojson", str(there), "--json", "--jobs", "2"
    )
    assert sorted(p.name for p in here.rglob("*.geojson")) == ["b.geojson", "sample.geojson"]
    local_files = _check_files(local, slides, here)
    assert _check_files(remote, slides, there) == local_files
    assert local_files["sample.geojson"]["count"] == 24 and "deeper/b.geojson" in local_files
    # the same features the gateway answers itself when asked for GeoJSON
    answered = requests.post(
        f"{gateway_url}/v1/services/eos:detect",
        data=SAMPLE_SLIDE.read_bytes(),
        headers={"Content-Type": "image/jpeg", "Accept": "application/geo+json"},
        timeout=60,
    ).json()
    assert answered["features"] == local_files["sample.geojson"]["features"]


def test_geojson_is_refused_for_a_classifier(slides, tmp_path, monkeypatch, capsys):
    config = tmp_path / "gateway.json"
    tissue = {"kind": "classification", "backend": {"url": "http://127.0.0.1:9", "model": "t"}}
    config.write_text(json.dumps({"services": {"tissue": tissue}, "usage": {"enabled": False}}))
    monkeypatch.setenv("GATEWAY_CONFIG", str(config))
    code = detect.main([str(slides), "--service", "tissue", "--geojson", str(tmp_path / "g")])
    assert code == 2
    assert "--geojson writes detections" in capsys.readouterr().err
