"""The deploy kit agrees with the code: entry point, environment names, ports, model name,
and example configurations that load.  (No Docker engine here: nothing is built.)"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from helpers import REPO
from procs import start_gateway

from gateway.auth import build_authenticator
from gateway.auth.cors import Cors
from gateway.catalog import load_config
from gateway.firestore_client import firestore_target

DEPLOY = REPO / "deploy"
sys.path.insert(0, str(DEPLOY))
import simulate_cloud_functions  # noqa: E402
from simulate_cloud_functions import ignored, upload_files  # noqa: E402

README = (DEPLOY / "README.md").read_text()
COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
K8S = list(yaml.safe_load_all((DEPLOY / "k8s" / "tf-serving.yaml").read_text()))
TF_DOCKERFILE = (DEPLOY / "tf-serving" / "Dockerfile").read_text()
GW_DOCKERFILE = (DEPLOY / "gateway" / "Dockerfile").read_text()
CONFIGS = ("gateway.yaml", "gateway.compose.yaml")


def _dockerfile_env(text: str) -> dict[str, str]:
    """``ENV A=1 \\ B=2`` lines of a Dockerfile."""
    joined = text.replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in joined.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"([A-Z_]+)=(\S+)", line))
    return env


def _code_text() -> str:
    return "\n".join(p.read_text() for p in (REPO / "gateway").rglob("*.py"))


def test_every_yaml_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert len(files) >= 4
    for f in files:
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
        assert docs, f


def test_entry_point_exists_in_main() -> None:
    """main.py (what the platform loads) and the installed ``serve`` source both take the
    package's decorated ``gateway``."""
    for source in (REPO / "main.py", REPO / "gateway" / "function" / "main.py"):
        tree = ast.parse(source.read_text())
        imports = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
        assert any(
            n.module == "gateway.function.entry" and [a.name for a in n.names] == ["gateway"]
            for n in imports
        ), source
    tree = ast.parse((REPO / "gateway" / "function" / "entry.py").read_text())
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "gateway" in functions
    decorators = [ast.unparse(d) for d in functions["gateway"].decorator_list]
    assert "functions_framework.http" in decorators
    assert "--entry-point=gateway" in README and "--target=gateway" in GW_DOCKERFILE


def test_the_rehearsal_needs_only_the_repository() -> None:
    """It sends the repository's synthetic slide, not a photograph kept elsewhere."""
    source = Path(simulate_cloud_functions.__file__).read_text()
    assert "DATA" not in vars(simulate_cloud_functions) and "real-slide" not in source
    assert simulate_cloud_functions.SAMPLE_SLIDE.is_file()
    assert simulate_cloud_functions.SAMPLE_SLIDE.is_relative_to(REPO)


def test_deploy_command_flags() -> None:
    command = README[README.index("gcloud functions deploy eos-gateway") :].split("```")[0]
    for flag in (
        "--gen2",
        "--runtime=python312",
        "--region=",
        "--source=.",
        "--entry-point=gateway",
        "--trigger-http",
        "--allow-unauthenticated",
        "GATEWAY_CONFIG=",
        "GOOGLE_CLOUD_PROJECT=",
    ):
        assert flag in command, flag
    run = README[README.index("gcloud run deploy eos-model") :].split("```")[0]
    assert "--no-allow-unauthenticated" in run
    assert "roles/run.invoker" in README and "google-id-token" in README


def test_environment_names_are_the_ones_the_code_reads() -> None:
    code = _code_text()
    gw_env = COMPOSE["services"]["gateway"]["environment"]
    for name in ("GATEWAY_CONFIG", "FIRESTORE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT"):
        assert f'"{name}"' in code, f"the code no longer reads {name}"
        assert name in gw_env, name
        assert name in README, name
    # PORT is read by functions-framework: the gateway's image passes it on.
    assert "PORT" in gw_env and "--port=${PORT}" in GW_DOCKERFILE
    assert _dockerfile_env(GW_DOCKERFILE)["GATEWAY_CONFIG"] == gw_env["GATEWAY_CONFIG"]
    config_in_image = gw_env["GATEWAY_CONFIG"].removeprefix("/app/")
    assert (REPO / config_in_image).is_file()
    assert f"COPY {config_in_image}" in GW_DOCKERFILE or "COPY deploy/gateway.compose.yaml" in (
        GW_DOCKERFILE
    )
    host, port = gw_env["FIRESTORE_EMULATOR_HOST"].split(":")
    assert host == "firestore" and f"{port}:{port}" in COMPOSE["services"]["firestore"]["ports"]
    assert f"--host-port=0.0.0.0:{port}" in COMPOSE["services"]["firestore"]["command"]
    gw_port = gw_env["PORT"]
    assert f"{gw_port}:{gw_port}" in COMPOSE["services"]["gateway"]["ports"]


def test_tf_serving_port_and_model_name_agree_everywhere() -> None:
    env = _dockerfile_env(TF_DOCKERFILE)
    port, model = env["PORT"], env["MODEL_NAME"]
    assert "--rest_api_port=${PORT}" in TF_DOCKERFILE
    assert "--model_name=${MODEL_NAME}" in TF_DOCKERFILE
    assert "--model_base_path=/models/${MODEL_NAME}" in TF_DOCKERFILE
    assert "COPY model/ /models/${MODEL_NAME}/1/" in TF_DOCKERFILE  # .../1/saved_model.pb
    assert re.search(r"^FROM tensorflow/serving:\d", TF_DOCKERFILE, re.M)

    tf = COMPOSE["services"]["tf-serving"]
    assert tf["environment"] == {"MODEL_NAME": model, "PORT": port}
    assert f"{port}:{port}" in tf["ports"]

    deployment = next(d for d in K8S if d["kind"] == "Deployment")
    service = next(d for d in K8S if d["kind"] == "Service")
    assert deployment["apiVersion"] == "apps/v1" and service["apiVersion"] == "v1"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    k8s_env = {e["name"]: e["value"] for e in container["env"]}
    assert k8s_env == {"MODEL_NAME": model, "PORT": port}
    assert [p["containerPort"] for p in container["ports"]] == [int(port)]
    assert container["readinessProbe"]["httpGet"] == {
        "path": f"/v1/models/{model}",
        "port": int(port),
    }
    assert service["spec"]["ports"][0]["targetPort"] == int(port)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels == service["spec"]["selector"]

    compose_cfg = load_config(DEPLOY / "gateway.compose.yaml")
    url = urlsplit(compose_cfg.services["eos"].backend.url)
    assert (url.hostname, url.port) == ("tf-serving", int(port))
    assert f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}" in README
    for name in CONFIGS:
        cfg = load_config(DEPLOY / name)
        assert cfg.services["eos"].backend.model == model, name


@pytest.mark.parametrize("name", CONFIGS)
def test_example_configs_load(name: str, monkeypatch) -> None:
    monkeypatch.delenv("K_SERVICE", raising=False)
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    cfg = load_config(DEPLOY / name)
    assert set(cfg.services) == {"eos"}
    Cors(cfg)
    build_authenticator(cfg)  # raises ConfigError on a bad auth section
    assert firestore_target(cfg) is not None


def test_cloud_config_is_fit_for_google_cloud() -> None:
    cfg = load_config(DEPLOY / "gateway.yaml")
    backend = cfg.services["eos"].backend
    assert backend.url.startswith("https://") and backend.auth == "google-id-token"
    assert cfg.auth and cfg.auth.get("required", True) is True
    assert cfg.cors["origins"] and all(o.startswith("https://") for o in cfg.cors["origins"])
    assert cfg.demo is False
    for key in cfg.auth.get("api_keys", []):
        assert re.fullmatch(r"[0-9a-f]{64}", key["sha256"])  # hashes only, never keys


def test_deploy_folder_is_not_uploaded_so_the_guide_copies_the_config() -> None:
    ignored = (REPO / ".gcloudignore").read_text().split()
    assert "deploy/" in ignored
    assert "cp deploy/gateway.yaml gateway.yaml" in README
    assert "GATEWAY_CONFIG=gateway.yaml" in README
    assert not any(Path(p).suffix == ".yaml" for p in ignored if p.startswith("*"))


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else None]


def test_readme_deploy_steps_make_the_configuration_they_name() -> None:
    """The README's deploy block creates ``gateway.yaml`` before it deploys with it."""
    steps = _section((REPO / "README.md").read_text(), "## Deploy").split("```")[1]
    copy = steps.index("cp deploy/gateway.yaml gateway.yaml")
    deploy = steps.index("gcloud functions deploy")
    assert copy < deploy and "GATEWAY_CONFIG=gateway.yaml" in steps[deploy:]
    load_config(DEPLOY / "gateway.yaml")  # what is copied loads


def test_the_upload_is_the_function_and_its_configuration() -> None:
    files = upload_files(REPO)
    assert {"main.py", "requirements.txt"} <= set(files)
    code = {p.relative_to(REPO).as_posix() for p in (REPO / "gateway").rglob("*") if p.is_file()}
    code = {c for c in code if "__pycache__" not in c}
    assert code <= set(files)  # every module and the demo page's assets
    tops = {f.split("/")[0] for f in files}
    assert tops <= {"main.py", "requirements.txt", "gateway", "gateway.yaml"}, tops
    patterns = (REPO / ".gcloudignore").read_text().splitlines()
    patterns = [p.strip() for p in patterns if p.strip() and not p.startswith("#")]
    assert not ignored("gateway.yaml", False, patterns)  # the README's copy goes up
    local_state = (".venv", ".venv-triton", "node_modules", ".git", ".gateway")
    for local in (*local_state, "tests", "deploy", "bench"):
        assert ignored(local, True, patterns), local
    assert ignored(".git", False, patterns)  # a worktree's .git is a file


def test_local_state_stays_out_of_git_and_docker_builds() -> None:
    gitignore = (REPO / ".gitignore").read_text().splitlines()
    assert "/gateway.yaml" in gitignore and "deploy/tf-serving/model/" in gitignore
    dockerignore = (REPO / ".dockerignore").read_text().splitlines()
    assert dockerignore[dockerignore.index("*")] == "*"  # everything out, then the image's files
    allowed = {line[1:].rstrip("/") for line in dockerignore if line.startswith("!")}
    copied = set()
    for line in GW_DOCKERFILE.splitlines():
        if line.startswith("COPY "):
            copied.update(p.rstrip("/").removeprefix("./") for p in line.split()[1:-1])
    assert copied and copied <= allowed, copied - allowed
    assert not {".venv", "node_modules", ".git", "tests"} & allowed


def test_model_copy_steps_make_the_folder_first() -> None:
    for text in (README, (DEPLOY / "docker-compose.yml").read_text()):
        copies = [m.start() for m in re.finditer(r"cp -r \S+ deploy/tf-serving/model/", text)]
        assert copies
        for at in copies:
            assert "mkdir -p deploy/tf-serving/model" in text[max(0, at - 200) : at]


def test_deployed_requirements_are_pinned_and_hold_the_server_the_gateway_subclasses() -> None:
    lines = [
        line.split("#")[0].strip()
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    pins = {}
    for line in lines:
        spec = line.split(";")[0].strip()
        name, sep, version = spec.partition("==")
        assert sep and version, f"not pinned: {line}"
        pins[name.lower()] = version
    serving = (REPO / "gateway" / "serving.py").read_text()
    assert "from gunicorn." in serving  # its worker internals: the pin must be the tested one
    assert pins["gunicorn"] == importlib.metadata.version("gunicorn")
    assert "gunicorn" not in (REPO / "requirements-dev.txt").read_text()
    turbojpeg = next(line for line in lines if line.startswith("turbojpeg=="))
    assert 'platform_machine == "x86_64"' in turbojpeg  # wheels for x86_64 only
    assert 'python_version < "3.14"' in turbojpeg  # and for 3.11-3.13: no source builds


@pytest.mark.process
def test_no_line_but_json_at_start_with_a_read_only_home() -> None:
    """``/proc`` as HOME: nothing can be created there, not even by root."""
    gw = start_gateway(env={"HOME": "/proc", "XDG_RUNTIME_DIR": ""})
    try:
        with urllib.request.urlopen(f"{gw.url}/readyz", timeout=30) as resp:
            assert resp.status == 200
    finally:
        gw.stop()
    lines = gw.log_text().splitlines()
    assert lines
    for line in lines:
        assert isinstance(json.loads(line), dict), line


@pytest.mark.process
def test_what_start_up_made_is_frozen_out_of_the_collector() -> None:
    """A full collection walks every object there is: after start-up that is every module
    and the configuration, which never become garbage; ``main`` moves them out of its way."""
    code = (
        "import gc\n"
        "before = gc.get_freeze_count()\n"
        "import main\n"
        "print(before, gc.get_freeze_count(), gc.isenabled())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GATEWAY_CONFIG", "K_SERVICE")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    before, after, enabled = done.stdout.splitlines()[-1].split()  # after the JSON logs
    assert int(before) == 0 and int(after) > 10_000  # the imported modules' objects
    assert enabled == "True"  # collection goes on for what requests make
