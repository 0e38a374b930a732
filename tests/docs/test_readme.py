"""The README's examples work from a fresh clone: its "Try it" commands run as written
against a gateway on the embedded defaults, and the sample slide they send is in the
repository, is what ``tools/sample_slide.py`` makes, and is counted right."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
from helpers import REPO, SAMPLE_SLIDE, run_cli
from PIL import Image
from process_guard import process_fixture
from procs import start_gateway

from tools import sample_slide

README = REPO / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _shell_blocks(section: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


@process_fixture(scope="module")
def gateway():
    proc = start_gateway()  # the README's first command: no configuration
    yield proc
    proc.stop()


def test_the_sample_slide_is_what_the_tool_makes():
    committed = np.asarray(Image.open(SAMPLE_SLIDE).convert("RGB")).astype(np.int16)
    made = sample_slide.render().astype(np.int16)
    assert committed.shape == made.shape == (sample_slide.HEIGHT, sample_slide.WIDTH, 3)
    # JPEG at quality 85 moves pixels by a few levels on average; another picture by dozens.
    assert float(np.abs(committed - made).mean()) < 4.0


@pytest.mark.process
def test_every_cell_of_the_sample_slide_is_counted():
    out = run_cli("detect", str(SAMPLE_SLIDE), "--json")
    assert out.returncode == 0, out.stderr
    (slide,) = json.loads(out.stdout)["slides"]
    assert slide["count"] == sample_slide.CELLS


def test_try_it_examples_run_as_written(gateway, tmp_path):
    (block,) = _shell_blocks(_section("Try it"))
    assert "../" not in block, "the examples must use only what is in the repository"
    # The same commands against this test's gateway, with their scratch files in tmp_path.
    script = block.replace("http://localhost:8080", gateway.url).replace("/tmp/", f"{tmp_path}/")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    # The first example prints the head of the predictions (400 bytes), the second a JSON.
    predict_head, detect_answer = done.stdout[:400], done.stdout[400:]
    assert re.match(r'\{\s*"predictions":\s*\[\s*\{', predict_head), predict_head
    answer = json.loads(detect_answer)
    assert answer["count"] == sample_slide.CELLS
    assert answer["image"] == {
        "width": sample_slide.WIDTH,
        "height": sample_slide.HEIGHT,
        "format": "JPEG",
    }
