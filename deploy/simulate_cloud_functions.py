"""Rehearse a Cloud Functions deployment on this machine, as far as it can be without Google.

    sudo .venv/bin/python deploy/simulate_cloud_functions.py [--python python3.13]
        [--keep-system-libturbojpeg] [--keep]

What the platform does, step by step: the upload is the repository filtered by
``.gcloudignore`` (plus a ``gateway.yaml`` made here, as the README's deploy steps make
one); the build is a fresh venv with ``pip install -r requirements.txt`` and nothing else;
the function runs from a read-only code folder as an unprivileged user (``nobody``) with a
read-only ``HOME``, only ``/tmp`` writable, ``K_SERVICE`` and ``PORT`` set, and the
system's ``libturbojpeg`` hidden (a private mount namespace) unless asked to keep it.
Then: ``/healthz``, ``/readyz`` (its ``image_path``), a ``:detect`` of
``samples/slide.jpg`` (the repository's synthetic slide: 24 cells, so it needs no real
photograph) with an API key and a trace header, SIGTERM; every line the process printed
must be JSON.  It takes minutes (the install), so it is a script, not a test; root only.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from helpers import SAMPLE_SLIDE  # noqa: E402
from hidden_libs import without_library  # noqa: E402
from procs import free_port  # noqa: E402

KEY = "simulated-deploy-key"
SAMPLE_COUNT = 24  # the cells tools/sample_slide.py drew on samples/slide.jpg
NOBODY = 65534


def ignore_patterns(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]


def ignored(rel: str, is_dir: bool, patterns: list[str]) -> bool:
    """Whether ``.gcloudignore`` (gitignore rules, as gcloud reads them) leaves ``rel`` out.

    Enough of the rules for this repository's file: names and globs matched at any depth,
    ``dir/`` for folders only, a leading ``/`` or an inner ``/`` anchored at the root,
    ``!`` taking a path back in.
    """
    result = False
    name = rel.rsplit("/", 1)[-1]
    for raw in patterns:
        negate = raw.startswith("!")
        pat = raw[1:] if negate else raw
        dir_only = pat.endswith("/")
        pat = pat.rstrip("/")
        if dir_only and not is_dir:
            continue
        if "/" in pat:  # anchored at the root
            hit = fnmatch.fnmatchcase(rel, pat.lstrip("/"))
        else:
            hit = fnmatch.fnmatchcase(name, pat)
        if hit:
            result = not negate
    return result


def upload_files(repo: Path) -> list[str]:
    """The repository's files that ``gcloud functions deploy --source=.`` would upload."""
    patterns = ignore_patterns(repo / ".gcloudignore")
    out = []
    for root, dirs, files in os.walk(repo):
        base = Path(root).relative_to(repo).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = sorted(d for d in dirs if not ignored(prefix + d, True, patterns))
        out += [prefix + f for f in sorted(files) if not ignored(prefix + f, False, patterns)]
    return out


def make_upload(dest: Path) -> list[str]:
    files = upload_files(REPO)
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    config = {
        "services": {"eos": {}},  # the embedded detector: no model server here
        "auth": {"api_keys": [{"id": "sim", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}]},
        "usage": {"sqlite": {"path": "/tmp/gateway/usage.sqlite3"}},
    }
    (dest / "gateway.yaml").write_text(json.dumps(config, indent=2))  # YAML is a JSON superset
    return files + ["gateway.yaml"]


def run(argv: list[str], **kw) -> None:
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, **kw)


def request(port: int, method: str, path: str, body: bytes | None = None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter for the build venv")
    ap.add_argument("--keep-system-libturbojpeg", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("root only: it switches to an unprivileged user and hides a library")
        return 2
    top = Path(tempfile.mkdtemp(prefix="simulated-cloud-function-"))
    top.chmod(0o755)
    src, venv = top / "workspace", top / "venv"
    failures: list[str] = []
    proc = None
    try:
        files = make_upload(src)
        print(f"upload: {len(files)} files ({', '.join(sorted({f.split('/')[0] for f in files}))})")
        t0 = time.perf_counter()
        run([args.python, "-m", "venv", str(venv)])
        pip = [str(venv / "bin/pip"), "install", "-q", "--no-cache-dir"]
        run([*pip, "-r", "requirements.txt"], cwd=src)
        print(f"build: {time.perf_counter() - t0:.0f} s")
        run(["chmod", "-R", "a-w", str(src), str(venv)])
        port = free_port()
        env = {
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(src),  # read-only, like the platform's
            "PORT": str(port),
            "K_SERVICE": "eos-gateway",
            "K_REVISION": "eos-gateway-00001",
            "GATEWAY_CONFIG": "gateway.yaml",
            "GOOGLE_CLOUD_PROJECT": "simulated-project",
            "PYTHONUNBUFFERED": "1",
        }
        server = [str(venv / "bin/functions-framework"), "--target=gateway", "--source=main.py"]
        # nobody, allowed to read (not write) what root keeps private, as the interpreter of
        # this machine lives under /root: writes fail everywhere but /tmp, as on the platform.
        read_only = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
        server = [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            *read_only,
            *server,
        ]
        if not args.keep_system_libturbojpeg:
            server = without_library(server, "libturbojpeg.so.0")
        log = top / "server.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                server,
                cwd=src,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        t0 = time.perf_counter()
        while True:
            try:
                if request(port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.perf_counter() - t0 > 60:
                failures.append("the function did not start")
                break
            time.sleep(0.05)
        if not failures:
            status, body = request(port, "GET", "/readyz")
            print(f"/readyz: {status} image_path={json.loads(body).get('image_path')!r}")
            slide = SAMPLE_SLIDE.read_bytes()
            headers = {
                "Content-Type": "image/jpeg",
                "X-API-Key": KEY,
                "X-Cloud-Trace-Context": "0123456789abcdef0123456789abcdef/1;o=1",
            }
            status, body = request(port, "POST", "/v1/services/eos:detect", slide, headers)
            count = json.loads(body).get("count") if status == 200 else None
            print(f":detect of samples/slide.jpg: {status}, count {count}")
            if status != 200:
                failures.append(f":detect answered {status}: {body[:300]!r}")
            elif count != SAMPLE_COUNT:
                failures.append(f":detect counted {count}, not {SAMPLE_COUNT}")
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(15)
        print(f"SIGTERM: exit code {code}")
        if code != 0:
            failures.append(f"exit code {code} after SIGTERM")
        lines = log.read_text(errors="replace").splitlines()
        not_json = [line for line in lines if not line.startswith("{")]
        traced = [line for line in lines if "logging.googleapis.com/trace" in line]
        print(f"log: {len(lines)} lines, {len(not_json)} not JSON, {len(traced)} with a trace")
        failures += [f"not a JSON log line: {line}" for line in not_json]
        if not traced:
            failures.append("no log line carries the trace")
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if args.keep:
            print(f"kept {top}")
        else:
            subprocess.run(["chmod", "-R", "u+w", str(top)], check=False)
            shutil.rmtree(top, ignore_errors=True)
    for f in failures:
        print("FAIL:", f)
    print("simulated deployment:", "works" if not failures else "FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
