"""`layerflow view` pages in headless Chromium from file://: the player plays, draws the checkerboard where alpha is
0, recomposites the shown layers (read back from the canvas), and the shard browser filters and lists quarantine."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from studio_browser import canvas_pixels, console_errors, open_page, wait_for

from data_engine.shards import ShardSink
from data_engine.synthetic import SyntheticConfig, synthetic_clip
from layerflow.studio.clips import read_sample_clip
from layerflow.studio.compose import compose
from layerflow.studio.view_cli import main as view_main
from model.export import ExportOptions, export_clip

WORLD = dict(num_clips=3, num_frames=4, height=24, width=32)
# Set to a folder (docs/) to keep the screenshots the README shows.
SHOTS = os.environ.get("LAYERFLOW_STUDIO_SCREENSHOTS")


def screenshot(driver, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / name))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A two-object clip written as `generate` writes it; returns the folder."""
    root = tmp_path_factory.mktemp("generate")
    clip = synthetic_clip(SyntheticConfig(**WORLD, num_objects=2), 0)
    export_clip(clip, root / "sample_000", ExportOptions(rgba_formats=("png",)))
    return root / "sample_000"


@pytest.fixture(scope="module")
def two_object_clip(generated):
    """The layers as the page got them (decoded from the sample's videos)."""
    return read_sample_clip(generated)


@pytest.fixture(scope="module")
def player_page(generated):
    assert view_main([str(generated), "--out", str(generated.parent / "page")]) == 0
    return generated.parent / "page" / "index.html"


@pytest.fixture(scope="module")
def shard_page(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    with ShardSink(root / "shards") as sink:
        for objects in (1, 2):
            for index in range(2):
                sink.write(synthetic_clip(SyntheticConfig(**WORLD, num_objects=objects), index))
        sink.quarantine("clip_broken.mp4", "decode", ValueError("moov atom not found"))
    assert view_main([str(root / "shards"), "--out", str(root / "page")]) == 0
    return root / "page" / "index.html"


def test_the_player_recomposites_the_shown_layers(chrome, player_page, two_object_clip):
    assert console_errors(open_page(chrome, player_page)) == []
    clip = two_object_clip
    recomposite = canvas_pixels(chrome, "recomposite")
    # Every layer shown at full opacity: the canvas's own compositing of the PNG layers is compose's blend (8-bit
    # premultiplied canvas arithmetic keeps it within a few levels).
    assert np.abs(recomposite[..., :3].astype(int) - compose(clip).blend[0]).max() <= 3
    for name in ("fg", "fg_1"):
        chrome.find_element("id", f"show-{name}").click()
    without = canvas_pixels(chrome, "recomposite")
    assert np.abs(without[..., :3].astype(int) - recomposite[..., :3]).max() > 50
    assert np.abs(without[..., :3].astype(int) - clip.bg[0]).max() <= 2
    assert console_errors(chrome.get_log("browser")) == []


def test_the_checkerboard_shows_where_alpha_is_zero(chrome, player_page, two_object_clip):
    open_page(chrome, player_page)
    fg = canvas_pixels(chrome, "layer-fg")[..., :3].astype(int)
    cell = max(2, min(WORLD["height"], WORLD["width"]) // 8)
    yy, xx = np.mgrid[0:WORLD["height"], 0:WORLD["width"]]
    board = np.where(((yy // cell + xx // cell) % 2 == 0), 204, 153)[..., None]
    clear = two_object_clip.alpha[0] == 0
    assert clear.any() and (fg[clear] == board[clear]).all()
    opaque = two_object_clip.alpha[0] == 255
    assert np.abs(fg[opaque] - board[opaque]).max() > 50


def test_playing_advances_the_frames(chrome, player_page, two_object_clip):
    open_page(chrome, player_page)
    first = canvas_pixels(chrome, "layer-blend")[..., :3]
    chrome.find_element("id", "play").click()
    # The frame number and the canvas are read in one script, so a tick cannot fall between them.
    frame, flat = wait_for(chrome, "const f = document.body.dataset.frame; if (f === '0') return null;"
                                   "const c = document.getElementById('layer-blend');"
                                   "return [Number(f), Array.from(c.getContext('2d').getImageData(0, 0, c.width,"
                                   " c.height).data)];", timeout=3)
    chrome.find_element("id", "play").click()
    now = np.array(flat, np.uint8).reshape(*first.shape[:2], 4)[..., :3].astype(int)
    assert not np.array_equal(now, first)
    assert np.abs(now - two_object_clip.blend[frame]).max() <= 1
    frame = int(chrome.execute_script("return document.body.dataset.frame"))
    chrome.find_element("id", "next").click()
    assert int(chrome.execute_script("return document.body.dataset.frame")) == (frame + 1) % WORLD["num_frames"]
    screenshot(chrome, "studio_player.png")


def test_the_shard_browser_filters_and_lists_the_quarantine(chrome, shard_page):
    assert console_errors(open_page(chrome, shard_page)) == []
    cards = chrome.find_elements("css selector", ".card")
    assert len(cards) == 4 and sorted(c.get_attribute("data-k") for c in cards) == ["1", "1", "2", "2"]
    assert "glides to the" in cards[0].text and "synthetic" in cards[0].text
    chrome.find_element("css selector", "#filter-k option[value='2']").click()
    shown = [c.get_attribute("data-k") for c in cards if c.is_displayed()]
    assert shown == ["2", "2"]
    table = chrome.find_element("id", "quarantine").text
    assert "clip_broken.mp4" in table and "moov atom not found" in table and "decode" in table
    next(c for c in cards if c.is_displayed()).click()
    wait_for(chrome, "return document.body.dataset.ready === '1' && !!document.getElementById('layer-fg_1')")
    screenshot(chrome, "studio_shards.png")
    assert console_errors(chrome.get_log("browser")) == []
