"""`mega2bart demo` in a real browser: the page served on loopback with the tiny model, driven by headless Chromium
(Playwright with Debian's chromium package, which .ci/run installs): drop a file, run, wait for the summary, check
the window table against the JSON download, see the one-line error of an empty file, and check that nothing is
fetched from outside (every request the browser makes, every resource the HTML and CSS name, every host name the
server looks up). The screenshot of the run is docs/demo.png:

    MEGA2BART_DEMO_SCREENSHOT=docs/demo.png .venv/bin/python -m pytest -q -m e2e tests/test_demo_browser.py
"""

from __future__ import annotations

import html.parser
import importlib.util
import json
import os
import re
import shutil
import socket
import textwrap
import urllib.request
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("MEGA2BART_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT_VARIABLE = "MEGA2BART_DEMO_SCREENSHOT"
FAST = {"num_beams": "1", "max_new_tokens": "12", "min_new_tokens": "4"}
REPORT = "\n".join(f"Sentence {i} describes topic {i % 7} of the long synthetic report." for i in range(40))
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _require(condition: bool, reason: str) -> None:
    """Skip without the browser or the packages; in CI (CI=true, where .ci/run installs them) fail instead."""
    if not condition:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: .ci/run installs it")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tiny_mega2bart_dir, tmp_path_factory):
    """The page of the tiny model (windows of 94 tokens) on loopback; the host names the server process looks up
    while it runs are collected in `lookups`."""
    _require(importlib.util.find_spec("gradio") is not None, 'needs Gradio: pip install "mega2bart[demo]"')
    from mega2bart.demo.app import serve
    from mega2bart.demo.runner import DemoModel

    lookups: list[str] = []
    real = socket.getaddrinfo

    def recorded(host, *args, **kwargs):
        lookups.append(host.decode() if isinstance(host, bytes) else str(host))
        return real(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", recorded)
        model = DemoModel(
            tiny_mega2bart_dir, max_input_tokens=96, window_overlap=16, work_dir=tmp_path_factory.mktemp("runs")
        )
        app, url = serve(model, port=_free_port(), block=False)
        yield url, lookups
        app.close()


@pytest.fixture(scope="module")
def browser():
    _require(Path(CHROMIUM).is_file(), f"needs Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "needs Playwright (pip install playwright)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(server, browser):
    """A fresh page on the app; the URLs it requests are in `page.requested`."""
    url, _ = server
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 1000})
    tab = context.new_page()
    tab.requested = []
    tab.on("request", lambda request: tab.requested.append(request.url))
    tab.goto(url)
    tab.wait_for_selector("#run")
    yield tab
    context.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _drop(page, name: str, data: bytes, mime: str) -> None:
    """Drop a file on the upload area, as a user drags one from their desktop."""
    transfer = page.evaluate_handle(
        """([name, bytes, mime]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, {type: mime}));
            return transfer;
        }""",
        [name, list(data), mime],
    )
    page.locator("#file button.upload-container").dispatch_event("drop", {"dataTransfer": transfer})


def _run(page, document: tuple[str, bytes, str]) -> dict:
    """Drop `document`, set fast generation, run; returns the JSON download's record. The progress texts the page
    showed are collected in `window.progressSeen`."""
    _drop(page, *document)
    page.wait_for_function("document.querySelector('#estimate').innerText.includes('Estimate')", timeout=60_000)
    for name, value in FAST.items():
        page.fill(f"#{name} input", value)
    page.evaluate(
        """() => {
            window.progressSeen = [];
            new MutationObserver(() => {
                const text = document.body.innerText.match(/(windows of the document|summary of summaries)[^\\n]*/g);
                if (text) window.progressSeen.push(...text);
            }).observe(document.body, {subtree: true, childList: true, characterData: true});
        }"""
    )
    page.click("#run")
    page.wait_for_function("document.querySelector('#status').innerText.includes('done in')", timeout=120_000)
    with page.expect_download() as download:
        page.click("#download-json")
    assert download.value.suggested_filename == f"{Path(document[0]).stem}.summary.json"
    return json.loads(Path(download.value.path()).read_text())


def _table(page, selector: str) -> list[list[str]]:
    """The rows of a Dataframe on the page (its grid's rows and cells, as a screen reader reads them)."""
    return page.eval_on_selector(
        selector,
        """element => [...element.querySelectorAll('[role=row][aria-rowindex]:not([aria-rowindex="1"])')].map(
            row => [...row.querySelectorAll('[role=gridcell]')].map(cell => cell.innerText.trim()))""",
    )


def test_drop_a_file_run_and_check_the_tables_and_the_json_download(page, tmp_path):
    record = _run(page, ("report.md", REPORT.encode(), "text/markdown"))

    assert record["id"] == "report.md" and record["levels"] >= 2
    assert page.input_value("#summary textarea") == record["summary"] != ""
    level0 = [w for w in record["windows"] if w["level"] == 0]
    rows = _table(page, "#windows")
    assert [row[:2] for row in rows] == [[str(w["index"]), f"{w['token_start']}-{w['token_end']}"] for w in level0]
    assert [row[-1] for row in rows] == [w["summary"] for w in level0]
    above = [w for w in record["windows"] if w["level"] >= 1]
    assert [row[:2] for row in _table(page, "#levels")] == [[str(w["level"]), str(w["index"])] for w in above]
    status = page.inner_text("#status")
    assert f"{len(level0)} windows, {record['levels']} levels" in status and "estimate" in status
    seen = page.evaluate("window.progressSeen")
    assert any(re.search(r"windows of the document: \d+/\d+", text) for text in seen), seen

    screenshot = tmp_path / "demo.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get(SCREENSHOT_VARIABLE):
        shutil.copyfile(screenshot, os.environ[SCREENSHOT_VARIABLE])


def test_an_empty_file_shows_a_one_line_error(page):
    _drop(page, "empty.txt", b"", "text/plain")
    page.wait_for_selector("#estimate .error-line")
    assert page.inner_text("#estimate .error-line") == "empty.txt: the file is empty"
    page.click("#run")
    toast = page.get_by_text("empty.txt: the file is empty", exact=True).last
    toast.wait_for(timeout=60_000)
    assert toast.is_visible() and "done in" not in page.inner_text("#status")


def test_stop_cancels_a_running_summary(page, monkeypatch):
    from mega2bart.demo.runner import Cancelled, DemoModel

    outcomes: list[BaseException | None] = []
    run = DemoModel.run

    def recorded(self, *args, **kwargs):
        try:
            result = run(self, *args, **kwargs)
        except BaseException as exc:
            outcomes.append(exc)
            raise
        outcomes.append(None)
        return result

    monkeypatch.setattr(DemoModel, "run", recorded)
    page.fill("#text textarea", REPORT * 3)
    for name, value in {"num_beams": "4", "max_new_tokens": "400", "min_new_tokens": "400"}.items():
        page.fill(f"#{name} input", value)  # long enough to be running when Stop is pressed
    page.click("#run")
    page.wait_for_function(
        "document.body.innerText.includes('windows of the document')", timeout=120_000
    )  # the progress bar: it runs
    page.click("#stop")
    for _ in range(600):
        if outcomes:
            break
        page.wait_for_timeout(100)
    assert outcomes and isinstance(outcomes[0], Cancelled), outcomes  # generation stopped at its next step
    assert "done in" not in page.inner_text("#status")


def test_drop_a_pdf(request):
    from mega2bart.demo.runner import DOCUMENT_SUFFIXES

    if ".pdf" not in DOCUMENT_SUFFIXES:
        pytest.skip("the installed document reader (mega2bart.documents) does not read .pdf yet")
    page = request.getfixturevalue("page")
    lines = REPORT.splitlines()
    pages = ["\n".join(lines[:20]), "\n".join(lines[20:])]
    record = _run(page, ("paper.pdf", _pdf(pages), "application/pdf"))
    assert record["id"] == "paper.pdf" and record["summary"]
    level0 = [w for w in record["windows"] if w["level"] == 0]
    assert len(_table(page, "#windows")) == len(level0)
    if any("pages" in w for w in level0):  # the record keeps each window's pages: the table shows them
        headers = page.eval_on_selector_all(
            "#windows [role=columnheader]", "cells => cells.map(c => c.innerText.trim())"
        )
        assert "pages" in headers


def test_nothing_is_fetched_from_outside(page, server):
    url, lookups = server
    page.locator("#model-panel").get_by_text("Model", exact=True).click()  # the model panel, then the API page
    page.wait_for_selector("#model")
    assert "parameters:" in page.inner_text("#model") and "EMA reach" in page.inner_text("#model")
    page.click("text=Use via API")
    page.wait_for_load_state("networkidle")
    origin = url.rstrip("/")
    outside = [u for u in page.requested if not u.startswith((origin, "data:", "blob:"))]
    assert page.requested and not outside, outside

    # every resource the HTML names (scripts, styles, icons, images) and every url() / @import of its CSS
    resources = _resources(_get(url), url)
    styles = [link for link in resources if link.endswith(".css")]
    assert styles, resources
    for link in styles:
        resources += [urljoin(link, ref) for ref in re.findall(r"(?:url\(|@import\s+)['\"]?([^'\")\s]+)", _get(link))]
    assert not [link for link in resources if urlsplit(link).hostname not in (None, *LOOPBACK)]
    assert not [host for host in lookups if host not in LOOPBACK], lookups


class _ResourceLinks(html.parser.HTMLParser):
    """What a browser loads from an HTML page: src of script/img/iframe/source, href of link."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        key = "href" if tag == "link" else "src" if tag in ("script", "img", "iframe", "source") else None
        if key and values.get(key):
            self.links.append(values[key])  # type: ignore[arg-type]


def _resources(markup: str, base: str) -> list[str]:
    parser = _ResourceLinks()
    parser.feed(markup)
    return [urljoin(base, link) for link in parser.links if not link.startswith("data:")]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode("utf-8", "replace")


def _pdf(pages: list[str]) -> bytes:
    """A PDF with a text layer: each page's text in Helvetica, wrapped at 90 characters (written by hand: the
    format's catalog, page tree, font, one content stream per page and the cross-reference table)."""
    objects = {1: "<< /Type /Catalog /Pages 2 0 R >>", 3: "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"}
    kids = [4 + 2 * number for number in range(len(pages))]
    objects[2] = f"<< /Type /Pages /Kids [{' '.join(f'{kid} 0 R' for kid in kids)}] /Count {len(pages)} >>"
    for kid, text in zip(kids, pages, strict=True):
        lines = [re.sub(r"([\\()])", r"\\\1", line) for line in textwrap.wrap(text, 90)]
        stream = "BT /F1 10 Tf 14 TL 50 760 Td " + " ".join(f"({line}) Tj T*" for line in lines) + " ET"
        objects[kid] = (
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {kid + 1} 0 R >>"
        )
        objects[kid + 1] = f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream"
    out, offsets = b"%PDF-1.4\n", {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += f"{number} 0 obj\n{objects[number]}\nendobj\n".encode()
    table = "".join(f"{offsets[number]:010d} 00000 n \n" for number in sorted(objects))
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n{table}".encode()
    return out + f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
