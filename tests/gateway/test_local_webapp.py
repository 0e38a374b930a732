"""A web app under development, served by its own development server on this machine, calls
the gateway of the README's first command (embedded defaults, no ``cors`` section) from
headless Chromium: its request code is the seed web app's, unmodified.  On Google Cloud
the same page is refused, since only configured origins are allowed there."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import tempfile
import threading
from functools import partial
from pathlib import Path

import pytest
import requests
from helpers import SAMPLE_SLIDE
from process_guard import process_fixture
from procs import Browser, start_gateway

# The seed web app's request: base64 of the photograph in TF Serving's JSON, posted with
# Content-Type application/json (so the browser sends a CORS preflight first), and the
# boxes and scores read from the first prediction.
WEBAPP = """<!doctype html>
<html><head><meta charset="utf-8"><title>web app</title></head><body>
<script>
async function photoAsBase64(path) {
  const blob = await (await fetch(path)).blob();
  return await new Promise((resolve) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",")[1]);
    reader.readAsDataURL(blob);
  });
}

async function detect(gatewayUrl, b64) {
  const response = await fetch(gatewayUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ instances: [{ image_bytes: { b64: b64 }, key: "eos" }] }),
  });
  const data = await response.json();
  const prediction = data.predictions[0];
  return { boxes: prediction.detection_boxes, scores: prediction.detection_scores };
}
</script>
</body></html>
"""

# Runs in the page: every URL asked in turn, each answer or the error the page saw.
ASK = """
const [urls, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  const b64 = await photoAsBase64("slide.jpg");
  const out = [];
  for (const url of urls) {
    try { out.push(await detect(url, b64)); } catch (e) { out.push({ error: String(e) }); }
  }
  return out;
})().then(done, (e) => done([{ error: String(e) }]));
"""

HOSTS = {"localhost": "localhost", "127.0.0.1": "127.0.0.1", "[::1]": "::1"}
NOTICE = "web pages on localhost, 127.0.0.1 and [::1] (any port) may call the gateway"


class DevServer:
    """The web app's development server: its files, on a loopback name and a port of its own."""

    def __init__(self, root: Path, host: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Server(http.server.ThreadingHTTPServer):
            address_family = family

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

        bind = "localhost" if host == "localhost" else host
        self.server = Server((bind, 0), partial(Handler, directory=str(root)))
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def webapp_files():
    root = Path(tempfile.mkdtemp(prefix="webapp-"))
    (root / "index.html").write_text(WEBAPP)
    shutil.copy(SAMPLE_SLIDE, root / "slide.jpg")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@process_fixture(scope="module")
def gateway():
    proc = start_gateway()  # the README's first command: embedded defaults
    yield proc
    proc.stop()


@process_fixture(scope="module")
def browser():
    chromium = Browser()
    yield chromium.driver
    chromium.stop()


@pytest.fixture(scope="module")
def expected(gateway) -> dict:
    """The answer the same request gets without a browser."""
    body = {"instances": [{"image_bytes": {"b64": _b64(SAMPLE_SLIDE)}, "key": "eos"}]}
    resp = requests.post(f"{gateway.url}/v1/models/eos:predict", json=body, timeout=120)
    assert resp.status_code == 200, resp.text[:300]
    p = resp.json()["predictions"][0]
    return {"boxes": p["detection_boxes"], "scores": p["detection_scores"]}


def _b64(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode()


def _ask(browser, page_host: str, root: Path, urls: list[str]) -> list[dict]:
    dev = DevServer(root, HOSTS[page_host])
    try:
        browser.get(f"http://{page_host}:{dev.port}/index.html")
        browser.set_script_timeout(180)
        return browser.execute_async_script(ASK, urls)
    finally:
        dev.close()


@pytest.mark.parametrize("page_host", list(HOSTS))
def test_a_local_web_app_gets_the_answer(gateway, browser, webapp_files, expected, page_host):
    urls = [f"{gateway.url}/", f"{gateway.url}/v1/models/eos:predict"]
    answers = _ask(browser, page_host, webapp_files, urls)
    assert len(expected["boxes"]) > 0
    for url, answer in zip(urls, answers, strict=True):
        assert "error" not in answer, (url, answer)
        assert answer == expected, url


def test_the_start_log_says_local_pages_are_allowed(gateway):
    assert NOTICE in gateway.log_text()


def test_on_google_cloud_local_pages_are_refused(browser, webapp_files):
    """Nothing changes there: without a ``cors`` section no other origin is allowed."""
    proc = start_gateway(
        {"auth": {"required": False}},
        env={"K_SERVICE": "eos-gateway", "GOOGLE_CLOUD_PROJECT": "demo-test"},
    )
    try:
        answers = _ask(browser, "localhost", webapp_files, [f"{proc.url}/"])
        preflight = requests.options(
            f"{proc.url}/",
            headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"},
            timeout=30,
        )
        log = proc.log_text()
    finally:
        proc.stop()
    assert "Failed to fetch" in answers[0].get("error", ""), json.dumps(answers)[:300]
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert NOTICE not in log
