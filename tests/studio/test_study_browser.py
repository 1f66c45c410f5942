"""The user-study page in headless Chromium from file://: it plays both sides, and the answers clicked round-trip
into the JSON the participant downloads, with the recorded sides resolved to systems."""
from __future__ import annotations

import json
from urllib.parse import unquote

import pytest
from studio_browser import console_errors, open_page, wait_for

from layerflow.studio.study import QUESTIONS, read_answers, score_report
from layerflow.studio.study_cli import main as study_main


@pytest.fixture(scope="module")
def study_page(study_runs):
    assert study_main(["make", "--a", str(study_runs / "a"), "--b", str(study_runs / "b"), "--seed", "1",
                       "--out", str(study_runs / "page")]) == 0
    return study_runs / "page" / "index.html"


def test_an_answer_round_trips_into_the_downloaded_json(chrome, study_page, tmp_path):
    assert console_errors(open_page(chrome, study_page)) == []
    data = json.loads((study_page.parent / "assets" / "data.js").read_text().split("=", 1)[1].rstrip(";\n"))
    first = data["items"][0]
    wait_for(chrome, f"return document.getElementById('{first['id']}-left-blend').width > 0")
    chrome.find_element("id", "rater").send_keys("r1")
    chrome.find_element("id", f"{first['id']}-fg_quality-right").click()
    chrome.find_element("id", f"{first['id']}-layer_coherence-left").click()
    link = chrome.find_element("id", "download")
    assert link.get_attribute("download") == "answers-r1.json"
    saved = json.loads(unquote(link.get_attribute("href").split(",", 1)[1]))
    assert saved["rater"] == "r1" and saved["study_seed"] == 1 and saved["questions"] == len(QUESTIONS)
    assert saved["answers"] == [
        {"item": first["id"], "question": "fg_quality", "side": "right", "system": first["sides"]["right"]},
        {"item": first["id"], "question": "layer_coherence", "side": "left", "system": first["sides"]["left"]}]
    (tmp_path / "answers-r1.json").write_text(json.dumps(saved))
    assert "| fg_quality | 1 |" in score_report([read_answers(tmp_path / "answers-r1.json")])
    assert console_errors(chrome.get_log("browser")) == []
