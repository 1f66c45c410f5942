"""Helpers of the studio's page tests (tests/studio/): load a page, wait for it, read its console, its canvases and
the PNG frames in its data."""
from __future__ import annotations

import base64
import io
import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

INSTALL = "apt-get install -y chromium chromium-driver (Debian), then pip install -e '.[dev]' for selenium"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1000")


def missing_browser() -> str | None:
    """What is missing to drive Chromium, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return "chromium / chromedriver are not on PATH"
    return None


def require_browser() -> None:
    """Skip with one line saying how to install the browser, or fail under CI, where the browser tests must run."""
    missing = missing_browser()
    if missing and os.environ.get("CI"):
        pytest.fail(f"{missing}; CI must run the browser tests: {INSTALL}")
    if missing:
        pytest.skip(f"{missing}; to run the browser tests: {INSTALL}")


def open_page(driver, index) -> list[dict]:
    """Load a page from file:// and wait until its images are decoded; returns the console entries so far."""
    driver.get(index.resolve().as_uri())
    wait_for(driver, "return document.body.dataset.ready === '1'")
    return driver.get_log("browser")


def wait_for(driver, script: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for: {script}")


def console_errors(entries: list[dict]) -> list[str]:
    return [e["message"] for e in entries if e["level"] == "SEVERE"]


def canvas_pixels(driver, canvas_id: str) -> np.ndarray:
    """[H, W, 4] uint8 as the page's canvas holds them (getImageData)."""
    flat, h, w = driver.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "return [Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data), c.height, c.width];",
        canvas_id)
    return np.array(flat, np.uint8).reshape(h, w, 4)


def frame_pixels(url: str) -> np.ndarray:
    """The pixels of a PNG data URL in the page's data."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
