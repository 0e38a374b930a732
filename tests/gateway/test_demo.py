"""The demo page at ``/``: served when enabled, a JSON 404 when not, and working in a real
headless Chromium against a real gateway: upload a slide, see the API's count."""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import REPO, SAMPLE_SLIDE, image_answer, real_photo, sha
from PIL import Image
from process_guard import process_fixture
from procs import Browser, start_gateway, start_model_server

# Every test here runs the gateway (or the CLI) as its own process.
pytestmark = pytest.mark.process

ARTIFACTS = REPO / "test-artifacts"


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
    chromium = Browser()
    yield chromium.driver
    chromium.stop()


def _wait_for_result(driver, timeout: float = 120.0) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    body = driver.find_element(By.TAG_NAME, "body")
    WebDriverWait(driver, timeout).until(
        lambda d: body.get_attribute("data-state") in ("done", "error")
    )
    return body.get_attribute("data-state")


# What a person sees, read from the page's elements: compared between screenshots instead
# of pixels, so a font or an anti-aliasing change cannot fail a test and a stale slide can.
RESULT = ("picture", "drop", "count", "info", "save")
FORMATS = ("JPEG", "PNG", "TIFF", "WebP", "BMP", "GIF")


def snapshot(driver, name: str) -> dict:
    """Save a screenshot as ``test-artifacts/{name}.png`` and describe what it shows."""
    from selenium.webdriver.common.by import By

    def text(element_id: str) -> str | None:
        element = driver.find_element(By.ID, element_id)
        return element.text if element.is_displayed() else None

    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    terms = driver.find_elements(By.CSS_SELECTOR, "dl dt")
    return {
        "title": driver.title,
        "heading": text("heading"),
        "subheading": text("subheading"),
        "footer": text("footer"),
        "drop": text("drop"),
        "picture": driver.find_element(By.ID, "canvas").is_displayed(),
        "count_label": text("count-label"),
        "count": text("count"),
        "count_note": text("count-note"),
        "info": {t.text: t.find_element(By.XPATH, "following-sibling::dd[1]").text for t in terms},
        "save": driver.find_element(By.ID, "save").is_enabled(),
        "status": text("status"),
        "credentials_flagged": "attention"
        in (driver.find_element(By.ID, "credentials-card").get_attribute("class") or ""),
    }


def _open(driver, url: str) -> dict:
    """The page at ``url`` once its service list is in, as first shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.TAG_NAME, "option"))
    return snapshot(driver, "demo-page-fresh")


def _upload(driver, path: Path, name: str) -> dict:
    from selenium.webdriver.common.by import By

    driver.execute_script("document.body.dataset.state = 'idle'")
    driver.find_element(By.ID, "file").send_keys(str(path))
    _wait_for_result(driver)
    return snapshot(driver, name)


def _fits_its_card(driver, element_id: str) -> bool:
    """Whether the element's text stays inside its card, nothing cut off or overflowing."""
    return driver.execute_script(
        """
        const el = document.getElementById(arguments[0]);
        const card = el.closest('.card').getBoundingClientRect();
        const box = el.getBoundingClientRect();
        return box.left >= card.left && box.right <= card.right + 0.5
          && el.scrollWidth <= el.clientWidth;
        """,
        element_id,
    )


def _result(shown: dict) -> dict:
    """The part of the page that belongs to a slide (the drop zone: shown or not)."""
    return {k: (shown[k] is not None if k == "drop" else shown[k]) for k in RESULT}


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


def test_the_page_speaks_of_a_detector(gateway, browser) -> None:
    fresh = _open(browser, gateway.url + "/")
    assert fresh["heading"] == "Eosinophil counter" and "eos" in fresh["title"]
    assert "count eosinophils" in fresh["subheading"]
    assert "Service eos (detection)" in fresh["footer"] and "threshold" in fresh["footer"]
    assert fresh["count_label"].lower() == "eosinophils"
    assert "Drop a slide here" in fresh["drop"]
    assert all(f in fresh["drop"] for f in FORMATS), fresh["drop"]
    assert not fresh["picture"] and not fresh["save"] and fresh["count"] == "\u2013"
    assert set(fresh["info"].values()) == {"\u2013"}


def test_an_error_clears_the_slide_on_screen(gateway, browser, tmp_path: Path) -> None:
    """A failed upload after a good one leaves nothing of the good one: no picture, boxes,
    count or facts, and nothing to save; the page is as fresh, with the reason said."""
    fresh = _open(browser, gateway.url + "/")
    good = _upload(browser, SAMPLE_SLIDE, "demo-page-before-error")
    assert good["picture"] and good["save"] and int(good["count"]) > 0
    assert good["info"]["File"] == SAMPLE_SLIDE.name and good["info"]["Request"] != "\u2013"

    bogus = tmp_path / "notes.png"
    bogus.write_bytes(b"this is not an image at all")
    failed = _upload(browser, bogus, "demo-page-after-error")
    assert "unsupported_image" in failed["status"] and "Request " in failed["status"]
    assert _result(failed) == _result(fresh)
    assert failed["count_note"] == "No result"
    assert "notes.png" not in str(failed["info"])


def test_the_info_panel_describes_the_slide_on_screen(gateway, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    small = tmp_path / "small.png"
    Image.open(SAMPLE_SLIDE).crop((0, 0, 640, 480)).save(small)
    _open(browser, gateway.url + "/")
    first = _upload(browser, SAMPLE_SLIDE, "demo-page-first-slide")
    assert first["info"]["File"] == SAMPLE_SLIDE.name
    assert first["info"]["Size"] == "1280 \u00d7 960 JPEG"
    second = _upload(browser, small, "demo-page-second-slide")
    assert second["status"] is None, second["status"]
    assert second["info"]["File"] == "small.png" and second["info"]["Size"] == "640 \u00d7 480 PNG"
    canvas = browser.find_element(By.ID, "canvas")
    assert (canvas.get_attribute("width"), canvas.get_attribute("height")) == ("640", "480")
    assert (
        int(second["count"])
        == image_answer(f"{gateway.url}/v1/services/eos:detect", small.read_bytes(), "image/png")[
            "count"
        ]
    )


def test_a_slide_the_browser_cannot_show_is_told_not_shown(gateway, browser, tmp_path) -> None:
    """Chromium shows no TIFF: the gateway's count is said, and no earlier slide stays."""
    tiff = tmp_path / "scan.tif"
    Image.open(SAMPLE_SLIDE).save(tiff)
    fresh = _open(browser, gateway.url + "/")
    _upload(browser, SAMPLE_SLIDE, "demo-page-before-tiff")
    told = _upload(browser, tiff, "demo-page-tiff")
    expected = image_answer(f"{gateway.url}/v1/services/eos:detect", tiff.read_bytes())["count"]
    assert _result(told) == _result(fresh)
    assert "cannot display TIFF" in told["status"]
    assert f"counted {expected} at the service default 0.30" in told["status"]


def test_an_auth_error_sends_the_person_to_credentials(browser) -> None:
    key = "demo-page-key-0123456789"
    digest = sha(key)
    proc = start_gateway({"demo": True, "auth": {"api_keys": [{"id": "demo", "sha256": digest}]}})
    try:
        from selenium.webdriver.common.by import By

        fresh = _open(browser, proc.url + "/")
        refused = _upload(browser, SAMPLE_SLIDE, "demo-page-needs-credentials")
        assert "unauthenticated" in refused["status"]
        assert "open Credentials" in refused["status"] and "API key" in refused["status"]
        assert refused["credentials_flagged"]
        assert _result(refused) == _result(fresh)

        browser.find_element(By.TAG_NAME, "summary").click()
        browser.find_element(By.ID, "api-key").send_keys(key)
        counted = _upload(browser, SAMPLE_SLIDE, "demo-page-with-credentials")
        assert counted["status"] is None and int(counted["count"]) > 0
        assert counted["picture"] and not counted["credentials_flagged"]

        # A key that stops working: the slide counted with the good key does not stay.
        browser.find_element(By.ID, "api-key").clear()
        browser.find_element(By.ID, "api-key").send_keys("not-the-key")
        wrong = _upload(browser, SAMPLE_SLIDE, "demo-page-key-refused")
        assert "was refused" in wrong["status"] and "open Credentials" in wrong["status"]
        assert _fits_its_card(browser, "status")  # the request id too
        assert _result(wrong) == _result(fresh)
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
        fresh = _open(browser, proc.url + "/")
        options = [o.get_attribute("value") for o in browser.find_elements(By.TAG_NAME, "option")]
        assert options == ["cls"]  # nothing to drop an image on for a passthrough service
        shown = _upload(browser, SAMPLE_SLIDE, "demo-page-classifier")
        assert shown["status"] is None, shown["status"]
        assert shown["count"] == expected["label"]
        assert all(s["label"] in shown["count_note"] for s in expected["scores"])
        assert not browser.find_element(By.ID, "threshold-card").is_displayed()
    finally:
        proc.stop()
        model.stop()
    assert '"route":"classify"' in proc.log_text()
    # The page speaks of a classifier: no eosinophils, no count, no slider.
    assert fresh["heading"] == "Image classifier" and "cls" in fresh["title"]
    assert fresh["count_label"].lower() == "label"
    assert "Service cls (classification)" in fresh["footer"] and "label" in fresh["footer"]
    for words in (fresh["heading"], fresh["subheading"], fresh["footer"], fresh["drop"]):
        assert "eosinophil" not in words.lower() and "threshold" not in words.lower()
    assert all(f in fresh["drop"] for f in FORMATS)


def test_another_service_clears_the_result_and_rewords_the_page(browser) -> None:
    """A count from the detector does not stay beside the classifier's words, and back."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    model = start_model_server(model="cls", extra=["--kind", "classification"])
    services = {
        "eos": {},
        "cls": {"kind": "classification", "backend": {"url": model.url, "model": "cls"}},
    }
    proc = start_gateway({"demo": True, "services": services})
    try:
        fresh = _open(browser, proc.url + "/")
        counted = _upload(browser, SAMPLE_SLIDE, "demo-page-detector-before-switch")
        Select(browser.find_element(By.ID, "service")).select_by_value("cls")
        switched = snapshot(browser, "demo-page-switched-to-classifier")
        labelled = _upload(browser, SAMPLE_SLIDE, "demo-page-classifier-after-switch")
        Select(browser.find_element(By.ID, "service")).select_by_value("eos")
        back = snapshot(browser, "demo-page-switched-back")
    finally:
        proc.stop()
        model.stop()
    assert fresh["heading"] == "Eosinophil counter" and int(counted["count"]) > 0
    assert _result(switched) == _result(fresh)
    assert switched["heading"] == "Image classifier" and "(classification)" in switched["footer"]
    assert switched["count_label"].lower() == "label" and switched["count_note"] == "No image yet"
    assert labelled["picture"] and not labelled["count"].isdigit()
    assert _result(back) == _result(fresh)
    assert {k: back[k] for k in ("heading", "footer", "count_label", "drop")} == {
        k: fresh[k] for k in ("heading", "footer", "count_label", "drop")
    }


LONG_LABEL = (
    "eosinophilic oesophagitis, active, with basal zone hyperplasia and microabscesses "
    "(confirm on a second biopsy) "
    "Eosinophilicoesophagitisactivewithbasalzonehyperplasiaandmicroabscessesunbroken"
)


class StandInClassifier:
    """TF Serving's REST API answering one classification whatever the image: a label as
    long as a pathologist's, for the page's layout."""

    def __init__(self, labels: list[str]) -> None:
        answer = json.dumps({"predictions": [{"scores": [0.91, 0.09], "labels": labels}]}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("window", [(1400, 900), (700, 900)])
def test_a_long_label_fits_its_card(browser, window) -> None:
    from selenium.webdriver.common.by import By

    model = StandInClassifier([LONG_LABEL, "normal"])
    description = "oesophageal biopsy triage " * 6
    services = {
        "triage": {
            "kind": "classification",
            "description": description.strip(),
            "backend": {"url": model.url, "model": "triage"},
        }
    }
    proc = start_gateway({"demo": True, "services": services})
    try:
        browser.set_window_size(*window)
        _open(browser, proc.url + "/")
        shown = _upload(browser, SAMPLE_SLIDE, f"demo-page-long-label-{window[0]}")
        fits = {name: _fits_its_card(browser, name) for name in ("count", "count-note")}
        no_page_scroll = browser.execute_script(
            "const root = document.documentElement; return root.scrollWidth <= root.clientWidth;"
        )
        heading = browser.find_element(By.ID, "subheading").text
    finally:
        proc.stop()
        model.close()
    assert shown["count"] == LONG_LABEL, shown["status"]
    assert fits == {"count": True, "count-note": True} and no_page_scroll
    assert heading == description.strip()  # the service's own words, when it has them


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
