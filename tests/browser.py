"""Headless Chromium for the browser tests: Debian's `chromium` driven by Playwright (its own browser
downloads are not used), pages watched for console errors and for requests that leave the page's origin,
the example's static server, and the screenshots folder."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ROOT, with_default_signals

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
INSTALL = "apt-get install chromium (make setup does it when run as root)"
WEB = ROOT / "examples" / "web"


def chromium() -> str:
    """The path of Debian's Chromium; without it the test is skipped saying how to get it (failed in CI,
    where make setup must have installed it)."""
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is not installed in CI: {INSTALL}")
        pytest.skip(f"Chromium is not installed: {INSTALL}")
    return path


@dataclass
class Watched:
    """A page and what it said: console errors, uncaught exceptions, and every URL it requested."""
    page: object
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def shot(self, folder: Path, name: str) -> Path:
        """Full-page screenshots at desktop and phone widths: NAME-desktop.png, NAME-phone.png."""
        for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
            self.page.set_viewport_size(size)
            self.page.screenshot(path=str(folder / f"{name}-{label}.png"), full_page=True)
        self.page.set_viewport_size(DESKTOP)
        return folder


def watch(context, url: str) -> Watched:
    page = context.new_page()
    w = Watched(page)
    page.on("console", lambda m: w.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: w.errors.append(f"uncaught: {e}"))
    page.on("request", lambda r: w.requests.append(r.url))
    page.goto(url)
    return w


@contextmanager
def browser(user_data_dir: Path) -> Iterator[object]:
    """A persistent headless Chromium context with a fresh profile."""
    from playwright.sync_api import sync_playwright
    executable = chromium()
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(user_data_dir), executable_path=executable, headless=True,
                                                       args=FLAGS, viewport=DESKTOP)
        try:
            yield context
        finally:
            context.close()


@contextmanager
def web_server(bundle: Path) -> Iterator[str]:
    """examples/web/serve.py for ``bundle`` on a free port of 127.0.0.1; yields the page's URL."""
    assert (WEB / "node_modules" / "onnxruntime-web").is_dir(), "run `make setup` (npm ci in examples/web)"
    proc = subprocess.Popen(with_default_signals([sys.executable, WEB / "serve.py", bundle, "--port", "0"]),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert found, f"serve.py did not start: {line!r}"
        yield found.group(0)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def score_batch(page, csv: str, rows: int) -> list[float]:
    """Score ``csv`` (a header line of feature names, then rows) in the page's "Score several rows" box and
    return the exact answers its ``rows`` table cells keep in their data-value attributes."""
    page.click("#batch summary")
    page.fill("#batch-rows", csv)
    page.click("#batch-form button")
    page.wait_for_function(f"document.querySelectorAll('td.answer').length === {rows}")
    return [float(v) for v in page.eval_on_selector_all("td.answer", "els => els.map(e => e.dataset.value)")]
