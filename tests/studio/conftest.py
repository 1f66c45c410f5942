"""Headless Chromium for the studio's page tests: Debian's chromium and chromium-driver, driven by selenium.

Without them the browser tests skip with one line saying how to install them, except under CI (the CI variable
set), where a missing browser must fail: .ci/run installs it."""
from __future__ import annotations

import shutil

import pytest
from studio_browser import CHROMIUM_FLAGS, require_browser


@pytest.fixture(scope="module")
def chrome(tmp_path_factory):
    """One headless Chromium per test module, with a fresh profile, logging the page's console."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    yield driver
    driver.quit()
