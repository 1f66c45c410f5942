"""Headless Chromium for the studio's page tests: Debian's chromium and chromium-driver, driven by selenium.

Without them the browser tests skip with one line saying how to install them, except under CI (the CI variable
set), where a missing browser must fail: .ci/run installs it."""
from __future__ import annotations

import os
import shutil

import pytest

INSTALL = "apt-get install -y chromium chromium-driver (Debian), then pip install -e '.[dev]' for selenium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,1000")


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return "chromium / chromedriver are not on PATH"
    return None


@pytest.fixture(scope="module")
def chrome(tmp_path_factory):
    """One headless Chromium per test module, with a fresh profile, logging the page's console."""
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI must run the browser tests: {INSTALL}")
        pytest.skip(f"{missing}; to run the browser tests: {INSTALL}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    yield driver
    driver.quit()
