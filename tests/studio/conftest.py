"""The studio tests' fixtures: two systems' outputs for the user study, and headless Chromium for the page tests
(Debian's chromium and chromium-driver, driven by selenium).

Without them the browser tests skip with one line saying how to install them, except under CI (the CI variable
set), where a missing browser must fail: .ci/run installs it."""
from __future__ import annotations

import shutil

import pytest
from studio_browser import CHROMIUM_FLAGS, require_browser

from data_engine.synthetic import SyntheticConfig, synthetic_clip
from layerflow.studio.compose import Composition, Transform, compose
from model.export import ExportOptions, export_clip


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


@pytest.fixture(scope="module")
def study_runs(tmp_path_factory):
    """Two systems' outputs for the same three prompts, in `a/` and `b/`: the true clips (A) and the same with the
    foreground at half opacity (B), so which side shows which system is checkable from pixels."""
    root = tmp_path_factory.mktemp("runs")
    for index in range(3):
        clip = synthetic_clip(SyntheticConfig(num_clips=3, num_frames=3, height=16, width=20), index)
        faded = compose(clip, Composition(transforms={0: Transform(opacity=0.5)}))
        export_clip(clip, root / "a" / f"sample_{index:03d}", ExportOptions(rgba_formats=("png",), preview=False))
        export_clip(faded, root / "b" / f"sample_{index:03d}", ExportOptions(rgba_formats=("png",), preview=False))
    return root
