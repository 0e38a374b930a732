"""``python -m gateway detect`` on services of the other kinds, end to end: real
subprocesses, a gateway under functions-framework and KServe model servers (the project's
classifier, an echo model).

A classifier's slides come back as a label and a score, the same in-process and through
the gateway and the same as ``:classify`` answers; a passthrough service takes its
model's own bodies, not slides, so the CLI refuses it as a usage error (exit 2) in both modes.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import image_answer, jpeg, png, run_cli
from process_guard import process_fixture
from procs import start_gateway, start_kind_models
from synthetic import make_slide

from gateway import kinds

CLASSIFY_CSV_FIELDS = kinds.get("classification").cli.csv_fields

MODES = ["remote", "in-process"]


@process_fixture(scope="module")
def models():
    cls, echo = start_kind_models()
    yield cls, echo
    echo.stop()
    cls.stop()


@process_fixture(scope="module")
def gateway(models):
    cls, echo = models
    config = {
        "services": {
            "eos": {},
            "cls": {"kind": "classification", "backend": {"url": cls.url, "model": "cls"}},
            "echo": {"kind": "passthrough", "backend": {"url": echo.url, "model": "echo"}},
        },
    }
    proc = start_gateway(config)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> Path:
    """Three eosinophils (``eosinophils``) as JPEG, bare glass (``none``) as PNG."""
    root = tmp_path_factory.mktemp("slides")
    cells = [(80, 70, 40), (200, 150, 42), (300, 80, 40)]
    (root / "cells.jpg").write_bytes(jpeg(make_slide(400, 240, cells, seed=4)))
    glass = np.full((240, 400, 3), (228, 221, 222), dtype=np.uint8)
    (root / "glass.png").write_bytes(png(glass))
    return root


def mode_args(gateway, mode: str) -> tuple[list[str], dict[str, str]]:
    """The arguments and environment of the CLI in one mode: ``--url`` the running
    gateway, or in this process with the gateway's own configuration file."""
    if mode == "remote":
        return ["--url", gateway.url], {}
    return [], {"GATEWAY_CONFIG": str(gateway.workdir / "gateway-config.json")}


def classify_api(gateway, path: Path) -> dict:
    """What ``POST /v1/services/cls:classify`` answers for the file at ``path``."""
    return image_answer(f"{gateway.url}/v1/services/cls:classify", path.read_bytes())


@pytest.mark.parametrize("mode", MODES)
def test_json_holds_label_score_and_scores_as_the_api_answers(gateway, slides, mode):
    args, env = mode_args(gateway, mode)
    r = run_cli("detect", str(slides), "--service", "cls", "--json", *args, env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["kind"], doc["service"], doc["failed"]) == ("classification", "cls", 0)
    by_name = {Path(s["path"]).name: s for s in doc["slides"]}
    assert set(by_name) == {"cells.jpg", "glass.png"}
    assert by_name["cells.jpg"]["label"] == "eosinophils"
    assert by_name["glass.png"]["label"] == "none"
    for name, s in by_name.items():
        api = classify_api(gateway, slides / name)
        assert (s["label"], s["score"], s["scores"]) == (api["label"], api["score"], api["scores"])
        assert s["score"] == s["scores"][0]["score"] > 0.5  # best first
        assert (s["width"], s["height"], s["error"]) == (400, 240, None)
        assert not {"count", "detections", "threshold"} & set(s)  # a detector's fields


@pytest.mark.parametrize("mode", MODES)
def test_table_and_csv_print_label_and_score(gateway, slides, mode):
    args, env = mode_args(gateway, mode)
    api = {n: classify_api(gateway, slides / n) for n in ("cells.jpg", "glass.png")}

    table = run_cli("detect", str(slides), "--service", "cls", *args, env=env)
    assert table.returncode == 0, table.stderr
    lines = [line.split() for line in table.stdout.splitlines()]
    assert lines[0] == ["file", "label", "score", "seconds", "error"]
    rows = {Path(line[0]).name: line[1:3] for line in lines[1:3]}
    assert rows == {n: [a["label"], f"{a['score']:.2f}"] for n, a in api.items()}
    assert lines[3:] == [["2", "slides,", "0", "failed"]]  # no eosinophil total for labels

    out = run_cli("detect", str(slides), "--service", "cls", "--csv", "-", *args, env=env)
    assert out.returncode == 0, out.stderr
    reader = csv.DictReader(io.StringIO(out.stdout))
    assert tuple(reader.fieldnames or ()) == CLASSIFY_CSV_FIELDS
    got = {Path(r["path"]).name: (r["label"], r["score"], r["width"], r["error"]) for r in reader}
    assert got == {n: (a["label"], str(a["score"]), "400", "") for n, a in api.items()}


@pytest.mark.parametrize("mode", MODES)
def test_a_passthrough_service_is_a_usage_error(gateway, slides, mode):
    args, env = mode_args(gateway, mode)
    r = run_cli("detect", str(slides), "--service", "echo", *args, env=env)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert "'echo' is a passthrough service" in r.stderr
    assert "/v1/models/echo:predict" in r.stderr  # where its bodies go instead
