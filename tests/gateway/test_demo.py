"""The demo page at ``/``: served when enabled, a JSON 404 when not, and working in a real
headless Chromium against a real gateway: upload a slide, see the API's count."""

from __future__ import annotations

import http.client
import http.server
import json
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import REPO, SAMPLE_SLIDE, image_answer, real_photo, sha
from process_guard import process_fixture
from procs import start_gateway, start_model_server

# Every test here runs the gateway (or the CLI) as its own process.
pytestmark = pytest.mark.process

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _api_count(url: str, data: bytes, threshold: float | None = None) -> int:
    query = "" if threshold is None else f"?threshold={threshold}"
    return image_answer(f"{url}/v1/services/eos:detect{query}", data, "image/jpeg")["count"]


@process_fixture(scope="module")
def gateway():
    proc = start_gateway()  # no config: demo on (not on Google Cloud)
    yield proc
    proc.stop()


def test_page_is_self_contained(gateway) -> None:
    status, headers, body = _get(gateway.url + "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    html = body.decode()
    # Nothing loaded from elsewhere: no external scripts, styles, fonts or images.
    for marker in ("<script src", '<link rel="stylesheet"', "@import", "url(http", "//fonts."):
        assert marker not in html
    assert "http://" not in html and "https://" not in html
    assert ":detect" in html and 'id="file"' in html and 'id="threshold"' in html


def test_page_is_off_when_configured_off() -> None:
    proc = start_gateway({"demo": False})
    try:
        status, headers, body = _get(proc.url + "/")
    finally:
        proc.stop()
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert doc["code"] == "not_found" and doc["request_id"] == headers["X-Request-Id"]


def test_page_is_off_on_google_cloud_by_default() -> None:
    proc = start_gateway(env={"K_SERVICE": "eos-gateway", "GOOGLE_CLOUD_PROJECT": "demo-test"})
    try:
        status, _, body = _get(proc.url + "/")
        on = start_gateway({"demo": True}, env={"K_SERVICE": "eos-gateway"})
        try:
            on_status, _, _ = _get(on.url + "/")
        finally:
            on.stop()
    finally:
        proc.stop()
    assert status == 404 and json.loads(body)["code"] == "not_found"
    assert on_status == 200  # demo: true wins


@process_fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail(
            "chromium and chromium-driver are not installed (scripts/test.sh installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
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
        f"--user-data-dir={profile}",
        "--window-size=1400,900",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait_for_result(driver, timeout: float = 120.0) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    body = driver.find_element(By.TAG_NAME, "body")
    WebDriverWait(driver, timeout).until(
        lambda d: body.get_attribute("data-state") in ("done", "error")
    )
    return body.get_attribute("data-state")


def test_upload_shows_the_api_count(gateway, browser) -> None:
    from selenium.webdriver.common.by import By

    # A real photograph: its scores spread across the slider's range.
    slide = real_photo("real-slide.jpg")
    expected = _api_count(gateway.url, slide.read_bytes())
    assert expected > 0
    browser.get(gateway.url + "/")
    browser.find_element(By.ID, "file").send_keys(str(slide))
    state = _wait_for_result(browser)
    status = browser.find_element(By.ID, "status").text
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "demo-page.png"))
    assert state == "done", status
    assert int(browser.find_element(By.ID, "count").text) == expected
    assert browser.find_element(By.ID, "threshold").get_attribute("value") == "0.3"

    # Moving the slider re-filters in the page, without another request, and agrees with
    # the API at that threshold too.
    requests_before = gateway.log_text().count('"route":"detect"')
    browser.execute_script(
        "const s = document.getElementById('threshold'); s.value = '0.6';"
        "s.dispatchEvent(new Event('input'));"
    )
    shown = int(browser.find_element(By.ID, "count").text)
    assert gateway.log_text().count('"route":"detect"') == requests_before
    assert shown == _api_count(gateway.url, slide.read_bytes(), threshold=0.6)
    assert shown < expected
    browser.save_screenshot(str(ARTIFACTS / "demo-page-threshold-0.6.png"))


def test_errors_are_shown_with_their_reason(gateway, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    bogus = tmp_path / "notes.png"
    bogus.write_bytes(b"this is not an image at all")
    browser.get(gateway.url + "/")
    browser.find_element(By.ID, "file").send_keys(str(bogus))
    assert _wait_for_result(browser) == "error"
    assert "unsupported_image" in browser.find_element(By.ID, "status").text


def test_api_key_field_is_sent(browser) -> None:
    key = "demo-page-key-0123456789"
    digest = sha(key)
    proc = start_gateway({"demo": True, "auth": {"api_keys": [{"id": "demo", "sha256": digest}]}})
    try:
        from selenium.webdriver.common.by import By

        browser.get(proc.url + "/")
        browser.find_element(By.ID, "file").send_keys(str(SAMPLE_SLIDE))
        assert _wait_for_result(browser) == "error"
        assert "unauthenticated" in browser.find_element(By.ID, "status").text
        browser.find_element(By.TAG_NAME, "summary").click()
        browser.find_element(By.ID, "api-key").send_keys(key)
        browser.execute_script("document.body.dataset.state = 'idle'")
        browser.find_element(By.ID, "file").send_keys(str(SAMPLE_SLIDE))
        assert _wait_for_result(browser) == "done"
        assert int(browser.find_element(By.ID, "count").text) > 0
        log = proc.log_text()
    finally:
        proc.stop()
    assert '"principal":"key:demo"' in log
    assert key not in log


def test_a_classifier_shows_its_label(browser) -> None:
    """A classification service: the page calls :classify and shows the API's label."""
    from selenium.webdriver.common.by import By

    model = start_model_server(model="cls", extra=["--kind", "classification"])
    services = {
        "cls": {"kind": "classification", "backend": {"url": model.url, "model": "cls"}},
        "raw": {"kind": "passthrough", "backend": {"url": model.url, "model": "cls"}},
    }
    proc = start_gateway({"demo": True, "services": services})
    try:
        url = f"{proc.url}/v1/services/cls:classify"
        expected = image_answer(url, SAMPLE_SLIDE.read_bytes(), "image/jpeg")
        browser.get(proc.url + "/")
        options = [o.get_attribute("value") for o in browser.find_elements(By.TAG_NAME, "option")]
        assert options == ["cls"]  # nothing to drop an image on for a passthrough service
        browser.find_element(By.ID, "file").send_keys(str(SAMPLE_SLIDE))
        state = _wait_for_result(browser)
        assert state == "done", browser.find_element(By.ID, "status").text
        assert browser.find_element(By.ID, "count").text == expected["label"]
        note = browser.find_element(By.ID, "count-note").text
        assert all(s["label"] in note for s in expected["scores"])
        assert not browser.find_element(By.ID, "threshold-card").is_displayed()
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "demo-page-classifier.png"))
    finally:
        proc.stop()
        model.stop()
    assert '"route":"classify"' in proc.log_text()


class PrefixProxy:
    """A reverse proxy that mounts the gateway under a path prefix, as a cloudfunctions.net
    URL or an ingress rule does: ``/gateway`` and ``/gateway/x`` reach the gateway as ``/``
    and ``/x``; any other path is a 404 from the proxy.  ``seen`` lists the paths asked for;
    while ``hold`` is set, the service list waits (a page still loading).
    """

    HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}

    def __init__(self, upstream_port: int, prefix: str = "/gateway") -> None:
        self.seen: list[str] = []
        self.hold = threading.Event()
        self.released = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                proxy.seen.append(self.path)
                if not (self.path == prefix or self.path.startswith(prefix + "/")):
                    self.send_error(404)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == prefix + "/v1/services" and proxy.hold.is_set():
                    proxy.released.wait(60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in proxy.HOP}
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                try:
                    conn.request(self.command, self.path[len(prefix) :] or "/", body, headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in proxy.HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{prefix}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("slash", ["", "/"])
def test_page_works_under_a_path_prefix(gateway, browser, slash) -> None:
    """Mounted at /gateway, as on a cloudfunctions.net URL: the page calls the API under the
    prefix, with or without a trailing slash in the address."""
    from selenium.webdriver.common.by import By

    proxy = PrefixProxy(gateway.port)
    try:
        browser.get(proxy.url + slash)
        browser.find_element(By.ID, "file").send_keys(str(SAMPLE_SLIDE))
        state = _wait_for_result(browser)
        status = browser.find_element(By.ID, "status").text
        shown = browser.find_element(By.ID, "count").text
    finally:
        proxy.close()
    assert state == "done", (status, proxy.seen)
    assert int(shown) == _api_count(gateway.url, SAMPLE_SLIDE.read_bytes())
    assert "/gateway/v1/services" in proxy.seen
    assert "/gateway/v1/services/eos:detect" in proxy.seen
    assert all(p.startswith("/gateway") for p in proxy.seen), proxy.seen


def test_a_file_chosen_before_the_service_list_arrives_waits_for_it(gateway, browser) -> None:
    """On a slow link the page's service list can arrive after the user has picked a slide:
    the slide waits for the list instead of failing with "No service to call"."""
    from selenium.webdriver.common.by import By

    proxy = PrefixProxy(gateway.port)
    proxy.hold.set()
    try:
        browser.get(proxy.url + "/")
        browser.find_element(By.ID, "file").send_keys(str(SAMPLE_SLIDE))
        early = browser.find_element(By.TAG_NAME, "body").get_attribute("data-state")
        proxy.released.set()
        state = _wait_for_result(browser)
        status = browser.find_element(By.ID, "status").text
    finally:
        proxy.released.set()
        proxy.close()
    assert early != "error", status
    assert state == "done", (status, proxy.seen)
