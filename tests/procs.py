"""Real processes for integration tests: the gateway under functions-framework, the
KServe model server and Triton Inference Server, each on a free loopback port, with logs
kept for failure reports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from helpers import GATEWAY_VARIABLES, REPO, VENV_BIN


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(
    url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None, require_ok: bool = False
) -> None:
    """Until ``url`` answers anything over HTTP (any status), or a 2xx with ``require_ok``
    (Triton answers its readiness routes 400 while the model loads)."""
    end = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError as exc:
            if not require_ok:
                return
            last = exc
            time.sleep(0.1)
        except (OSError, urllib.error.URLError) as exc:
            last = exc
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s: {last}")


class Proc:
    """A server process on a loopback port; ``stop()`` sends SIGTERM, then SIGKILL."""

    def __init__(
        self,
        argv: list[str],
        port: int,
        env: dict[str, str],
        cwd: Path,
        ready_path: str,
        name: str,
        require_ok: bool = False,
    ) -> None:
        self.argv, self.port, self.env, self.cwd = argv, port, env, cwd
        self.ready_path, self.name, self.require_ok = ready_path, name, require_ok
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
        self.popen: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> Proc:
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        try:
            wait_http(self.url + self.ready_path, timeout, self.popen, self.require_ok)
        except Exception as exc:
            self.stop()
            raise RuntimeError(
                f"{self.name} did not start: {exc}\n{self.log_text()[-3000:]}"
            ) from exc
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def start_model_server(
    port: int | None = None,
    control_file: str | Path | None = None,
    model: str = "eos",
    extra: list[str] | None = None,
) -> Proc:
    """KServe's ModelServer hosting the local detector: TF Serving's REST protocol."""
    port = port or free_port()
    argv = [
        str(VENV_BIN / "python"),
        str(REPO / "tools" / "model_server.py"),
        "--http_port",
        str(port),
        "--grpc_port",
        str(free_port()),
        "--enable_grpc",
        "false",
        "--model_name",
        model,
        "--configure_logging",
        "false",
        "--enable_latency_logging",
        "false",
    ]
    if control_file is not None:
        argv += ["--control-file", str(control_file)]
    argv += extra or []
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return Proc(argv, port, env, REPO, f"/v1/models/{model}", "model-server").start()


def start_kind_models(echo_control: str | Path | None = None) -> tuple[Proc, Proc]:
    """The model servers behind a ``classification`` and a ``passthrough`` service: the
    project's classifier (model ``cls``) and an echo model (``echo``, steered by
    ``echo_control``).  Nothing is left running when the second does not start."""
    cls = start_model_server(model="cls", extra=["--kind", "classification"])
    try:
        echo = start_model_server(model="echo", control_file=echo_control, extra=["--kind", "echo"])
    except Exception:
        cls.stop()
        raise
    return cls, echo


def classifier_service(url: str, **over: Any) -> dict[str, Any]:
    """The gateway's configuration of a ``classification`` service on the ``cls`` model
    at ``url``: a minute per call (the first loads the model), slides cut down to 320 px."""
    return {
        "kind": "classification",
        "backend": {"url": url, "model": "cls", "timeout_s": 60},
        "max_side": 320,
        **over,
    }


def unreachable_service() -> dict[str, Any]:
    """A ``passthrough`` service whose model server is nowhere (a port nothing listens on),
    tried once."""
    return {
        "kind": "passthrough",
        "backend": {"url": f"http://127.0.0.1:{free_port()}", "retries": 0},
    }


TRITON_PYTHON = REPO / ".venv-triton" / "bin" / "python"


class TritonProc(Proc):
    """``tools/triton_server.py`` with its own ``PYTRITON_HOME`` (pytriton's workspace: a
    copy of ``tritonserver`` and the model store), removed after the stop.
    ``workspace_left`` names what the server left there when it stopped."""

    def __init__(self, *args: Any, home: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.home = home
        self.workspace_left: list[str] | None = None

    def stop(self, timeout: float = 30.0) -> int | None:
        """Triton unloads its model and polls for in-flight work before it exits: a few
        seconds, longer than the other servers take."""
        code = super().stop(timeout)
        if self.home.exists():
            self.workspace_left = sorted(p.name for p in self.home.iterdir())
            shutil.rmtree(self.home, ignore_errors=True)
        return code


def start_triton_server(
    port: int | None = None, model: str = "eos", extra: list[str] | None = None
) -> TritonProc:
    """A real Triton Inference Server (pytriton) hosting the local detector: the Open
    Inference Protocol (V2) with the binary tensor data extension.  It runs from
    ``.venv-triton``, which ``scripts/triton_venv.sh`` makes (``scripts/test.sh`` runs it)."""
    if not TRITON_PYTHON.exists():
        raise RuntimeError(f"{TRITON_PYTHON} is missing: run `bash scripts/triton_venv.sh`")
    port = port or free_port()
    home = Path(tempfile.mkdtemp(prefix="pytriton-"))
    argv = [
        str(TRITON_PYTHON),
        str(REPO / "tools" / "triton_server.py"),
        "--http-port",
        str(port),
        "--model-name",
        model,
        *(extra or []),
    ]
    env = dict(os.environ, PYTRITON_HOME=str(home), PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    ready = f"/v2/models/{model}/ready"
    proc = TritonProc(argv, port, env, REPO, ready, "triton-server", require_ok=True, home=home)
    return proc.start(timeout=120)


def write_config(config: dict[str, Any] | None, directory: Path) -> Path | None:
    if config is None:
        return None
    path = directory / "gateway-config.json"
    path.write_text(json.dumps(config))
    return path


def start_gateway(
    config: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    port: int | None = None,
    workdir: Path | None = None,
    start: bool = True,
) -> Proc:
    """The gateway served by ``functions-framework --target gateway`` (gunicorn inside).

    It runs in its own working directory, so the embedded SQLite usage store and the
    spool land in a temporary folder, never in the checkout.
    """
    port = port or free_port()
    workdir = workdir or Path(tempfile.mkdtemp(prefix="gateway-"))
    cfg = write_config(config, workdir)
    full_env = {k: v for k, v in os.environ.items() if k not in GATEWAY_VARIABLES}
    full_env.update({"PYTHONPATH": str(REPO), "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"})
    if cfg is not None:
        full_env["GATEWAY_CONFIG"] = str(cfg)
    full_env.update(env or {})
    argv = [
        str(VENV_BIN / "functions-framework"),
        "--target",
        "gateway",
        "--source",
        str(REPO / "main.py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = Proc(argv, port, full_env, workdir, "/healthz", "gateway")
    proc.workdir = workdir  # type: ignore[attr-defined]
    return proc.start() if start else proc


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


class Browser:
    """Headless Chromium driven by selenium, in its own throw-away profile."""

    def __init__(self, window: str = "1400,900") -> None:
        if not (CHROMIUM and CHROMEDRIVER):
            raise RuntimeError(
                "chromium and chromium-driver are not installed (scripts/test.sh installs them)"
            )
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={self.profile}",
            f"--window-size={window}",
        ):
            options.add_argument(arg)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(60)

    def stop(self) -> None:
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)


def child_pids(parent: int) -> set[int]:
    """The processes whose parent is ``parent`` (gunicorn's workers of its arbiter)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent:
                found.add(int(entry))
    return found
