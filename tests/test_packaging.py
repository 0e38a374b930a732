"""The package as pip installs it: a wheel built from the checkout, installed into fresh
venvs, gives the ``eos-gateway`` command that works from any folder (``detect`` in
process, ``serve`` under functions-framework), and says in one line what to install when
the gateway's dependencies are not there.

Nothing is downloaded: the wheel is built with this venv's setuptools and installed
``--no-deps``; one venv reaches this venv's libraries through a ``.pth`` file (its own
site-packages, holding the installed ``gateway``, come first), the other has none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import urllib.request
from pathlib import Path

import pytest
from helpers import GATEWAY_VARIABLES, REPO, SAMPLE_SLIDE
from process_guard import process_fixture
from procs import Proc, free_port

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# What the wheel is built from: the package and what pyproject.toml reads.
SOURCES = ("pyproject.toml", "README.md", "requirements.txt", "gateway")


def requirement_lines(path: Path) -> list[str]:
    """The requirements a pip requirements file names (comments and ``-r`` lines left out)."""
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("-")]


def test_dev_extra_is_requirements_dev_list() -> None:
    dev = requirement_lines(REPO / "requirements-dev.txt")
    assert "-r requirements.txt" in (REPO / "requirements-dev.txt").read_text()
    assert PYPROJECT["project"]["optional-dependencies"]["dev"] == list(dict.fromkeys(dev))


def test_dependencies_are_requirements_txt() -> None:
    """Cloud Functions install requirements.txt, pip the package: one list for both."""
    project = PYPROJECT["project"]
    assert "dependencies" in project["dynamic"] and "dependencies" not in project
    files = PYPROJECT["tool"]["setuptools"]["dynamic"]["dependencies"]["file"]
    assert files == ["requirements.txt"]
    assert not any(line.startswith("-") for line in requirement_lines(REPO / "requirements.txt"))


def test_console_command_is_the_module_entry() -> None:
    assert PYPROJECT["project"]["scripts"] == {"eos-gateway": "gateway.__main__:main"}


def _pip(*args: str, cwd: Path | None = None) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def _venv(path: Path, libraries: bool, wheel: Path) -> Path:
    """A fresh venv with the wheel installed; ``libraries``: this venv's site-packages
    after its own (what ``pip install .`` would have installed, without the download)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    if libraries:
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        ours = sysconfig.get_path("purelib")  # this venv's libraries
        line = f"import site; site.addsitedir({ours!r})\n"
        Path(site, "zz_test_libraries.pth").write_text(line)
    _pip("--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel))
    return path


@process_fixture(scope="module")
def venvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    top = tmp_path_factory.mktemp("installed")
    source = top / "checkout"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(REPO / name, source / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, source / name)
    dist = top / "dist"
    _pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), ".", cwd=source)
    (wheel,) = dist.glob("eos_gateway-*.whl")
    return {
        "full": _venv(top / "full", True, wheel),
        "bare": _venv(top / "bare", False, wheel),
    }


def _elsewhere(tmp_path: Path) -> Path:
    """A folder that is not the checkout, holding ``samples/slide.jpg``."""
    (tmp_path / "samples").mkdir()
    shutil.copy2(SAMPLE_SLIDE, tmp_path / "samples" / "slide.jpg")
    return tmp_path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in GATEWAY_VARIABLES}
    env.pop("PYTHONPATH", None)  # the installed package only, never the checkout's
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / "eos-gateway"), *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_installed_package_is_the_one_imported(venvs, tmp_path) -> None:
    done = subprocess.run(
        [str(venvs["full"] / "bin" / "python"), "-c", "import gateway; print(gateway.__file__)"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip().startswith(str(venvs["full"])), done.stdout
    static = list((venvs["full"] / "lib").glob("python3*/site-packages/gateway/static/demo.html"))
    assert len(static) == 1  # the demo page travels with the package
    assert not list((venvs["full"] / "lib").glob("python3*/site-packages/main.py"))


def test_help_names_every_command(venvs, tmp_path) -> None:
    done = _run(venvs["full"], "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: eos-gateway")
    for command in ("detect", "usage", "replay-usage", "serve"):
        assert f"    {command}" in done.stdout, command


def test_detect_counts_the_sample_from_another_folder(venvs, tmp_path) -> None:
    here = _elsewhere(tmp_path)
    done = _run(venvs["full"], "detect", "samples/slide.jpg", "--json", "out.json", cwd=here)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["summary"]["slides"] == 1
    (record,) = [json.loads(line) for line in (here / "out.json").read_text().splitlines()]
    assert record["count"] == 24


def test_serve_answers_from_another_folder(venvs, tmp_path) -> None:
    here = _elsewhere(tmp_path)
    port = free_port()
    argv = [str(venvs["full"] / "bin" / "eos-gateway"), "serve", "--port", str(port)]
    server = Proc(argv, port, _env(), here, "/healthz", "eos-gateway-serve").start()
    try:
        request = urllib.request.Request(
            f"{server.url}/v1/services/eos:detect",
            data=(here / "samples" / "slide.jpg").read_bytes(),
            headers={"Content-Type": "image/jpeg"},
        )
        with urllib.request.urlopen(request, timeout=120) as resp:
            answer = json.loads(resp.read())
        with urllib.request.urlopen(f"{server.url}/", timeout=30) as resp:
            page = resp.read().decode()
    finally:
        code = server.stop()
    assert answer["count"] == 24
    assert "<html" in page.lower()  # the demo page, from the installed package
    assert code == 0, server.log_text()[-2000:]


@pytest.mark.parametrize("args", [["detect", "samples/slide.jpg"], ["serve"], ["usage"]])
def test_a_missing_dependency_is_one_line_naming_it(venvs, tmp_path, args) -> None:
    here = _elsewhere(tmp_path)
    done = _run(venvs["bare"], *args, cwd=here)
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("eos-gateway needs PyYAML, which ")  # the configuration's reader
    assert "pip install PyYAML" in line


def test_help_needs_no_dependency(venvs, tmp_path) -> None:
    done = _run(venvs["bare"], "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "serve" in done.stdout
