"""`layerflow view` without a browser: the page's data holds the layers losslessly, the engine folder's samples and
quarantine, and bad input is one line; the browser gate skips or, under CI, fails."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from studio_browser import INSTALL, frame_pixels, require_browser

from data_engine.shards import ShardSink
from data_engine.synthetic import SyntheticConfig, synthetic_clip
from layerflow.studio.clips import read_sample_clip
from layerflow.studio.page_data import page_data
from layerflow.studio.view_cli import main as view_main
from model.export import ExportOptions, export_clip, rgba_frames

WORLD = dict(num_clips=2, num_frames=3, height=16, width=20)


def test_an_engine_folder_gives_its_samples_and_quarantine(tmp_path):
    clips = [synthetic_clip(SyntheticConfig(**WORLD, num_objects=k), 0) for k in (1, 2)]
    with ShardSink(tmp_path) as sink:
        for clip in clips:
            sink.write(clip)
        sink.quarantine("bad.mp4", "clip", ValueError("too short: 2 frames"))
    data = page_data(tmp_path)
    assert data["kind"] == "engine" and [s["K"] for s in data["samples"]] == [1, 2]
    assert data["quarantine"][0]["input"] == "bad.mp4" and "too short" in data["quarantine"][0]["message"]
    two = data["samples"][1]
    layers = {layer["name"]: layer for layer in two["layers"]}
    assert list(layers) == list(clips[1].layer_names) and two["captions"] == clips[1].captions.as_dict()
    assert layers["fg_1"]["kind"] == "rgba" and layers["alpha_1"]["kind"] == "alpha"
    # Shards keep alpha within 2/255 by default; the page's PNG is the decoded frame exactly.
    assert np.abs(frame_pixels(layers["alpha_1"]["frames"][2]).astype(int) - clips[1].layer("alpha_1")[2]).max() <= 2
    assert frame_pixels(layers["fg"]["frames"][0]).shape == (16, 20, 4)


def test_a_sample_folder_page_is_written_beside_its_assets(tmp_path, capsys):
    clip = synthetic_clip(SyntheticConfig(**WORLD), 1)
    export_clip(clip, tmp_path / "run" / "sample_000", ExportOptions(rgba_formats=("png",)))
    assert view_main([str(tmp_path / "run")]) == 0
    page = tmp_path / "run" / "studio"
    assert sorted(p.name for p in (page / "assets").iterdir()) == ["common.js", "data.js", "studio.css", "studio.js"]
    html = (page / "index.html").read_text()
    assert "http" not in html and "http" not in (page / "assets" / "studio.js").read_text()
    data = json.loads((page / "assets" / "data.js").read_text().split("=", 1)[1].rstrip(";\n"))
    rgba = frame_pixels(data["samples"][0]["layers"][0]["frames"][1])
    assert np.array_equal(rgba, rgba_frames(read_sample_clip(tmp_path / "run" / "sample_000"))[1])
    assert view_main([str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_the_browser_gate_skips_with_how_to_install_and_fails_under_ci(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium chromium-driver"):
        require_browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the browser tests"):
        require_browser()
    assert "chromium-driver" in INSTALL
