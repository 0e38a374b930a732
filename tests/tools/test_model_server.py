"""``tools/model_server.py --help`` prints the tool's options and KServe's, and exits
without starting a server (KServe parses ``sys.argv`` when imported and knows no
``--help``)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO
from procs import free_port


@pytest.mark.process
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_options_and_starts_nothing(flag: str, tmp_path) -> None:
    # Ports of its own, so that a server started by mistake collides with nothing.
    ports = ["--http_port", str(free_port()), "--grpc_port", str(free_port())]
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "model_server.py"), *ports, flag],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: tools/model_server.py")
    for option in ("--kind", "--versions", "--pad-detections", "--http_port", "--model_name"):
        assert option in done.stdout, option
    assert "Registering model" not in done.stdout + done.stderr
