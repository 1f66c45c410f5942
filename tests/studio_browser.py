"""Helpers of the studio's browser tests (tests/studio/): load a page, wait for it, read its console."""
from __future__ import annotations

import time


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
