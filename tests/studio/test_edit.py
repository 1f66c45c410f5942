"""`layerflow edit`: decompose -> compose onto a new background -> harmonise, wired so each step reads the one
before, with the tiny preset's random model (the wiring, not the model's quality, is under test)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from data_engine.synthetic import SyntheticConfig, synthetic_clip
from data_engine.video_io import encode_png, write_video
from layerflow.studio.clips import read_sample_clip
from layerflow.studio.edit import main as edit_main

WORLD = SyntheticConfig(num_clips=2, num_frames=4, height=32, width=48)
MODEL = ["--model-dir", "none", "--frames", "4", "--height", "32", "--width", "48", "--steps", "2",
         "--fg-prompt", "a disc", "--bg-prompt", "a field"]


def mean_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("edit")
    source, other = synthetic_clip(WORLD, 0), synthetic_clip(WORLD, 1)
    write_video(root / "blend.mp4", source.blend, 8.0)
    (root / "bg.png").write_bytes(encode_png(other.bg[0]))
    return root, source, other.bg[0]


def test_each_step_reads_the_one_before(inputs, capsys):
    root, source, background = inputs
    out = root / "run"
    assert edit_main([str(root / "blend.mp4"), "--background", str(root / "bg.png"), "--out", str(out),
                      "--harmonise", *MODEL]) == 0
    decomposed = read_sample_clip(out / "1_decomposed" / "decompose")
    composed = read_sample_clip(out / "2_composed")
    harmonised = read_sample_clip(out / "3_harmonised" / "bg_conditioned")
    # The decomposition's condition is the input video; its layers go on the new background unchanged.
    assert mean_error(decomposed.blend, source.blend) < 3
    assert mean_error(composed.alpha, decomposed.alpha) < 1
    assert mean_error(composed.bg, np.broadcast_to(background, composed.bg.shape)) < 3
    assert mean_error(composed.bg, decomposed.bg) > 10  # the background was replaced
    # Harmonising is conditioned on the composed background, which comes back as given.
    assert mean_error(harmonised.bg, composed.bg) < 3
    # edit.png: 3 frames x (input, fg, alpha, new bg, composed, harmonised fg, harmonised blend), 4x upscaled.
    width, height = Image.open(out / "edit.png").size
    assert (width, height) == (4 * (7 * 48 + 6 * 2), 4 * (3 * 32 + 2 * 2))
    printed = capsys.readouterr().out
    assert f"picture:    {out / 'edit.png'}" in printed and "harmonised:" in printed


def test_a_transparent_foreground_leaves_the_new_background(inputs):
    root, _, background = inputs
    out = root / "faded"
    assert edit_main([str(root / "blend.mp4"), "--background", str(root / "bg.png"), "--out", str(out),
                      "--fg-transform", "0:opacity=0", *MODEL]) == 0
    composed = read_sample_clip(out / "2_composed")
    assert not composed.alpha.any()
    assert mean_error(composed.blend, np.broadcast_to(background, composed.blend.shape)) < 3
    assert not (out / "3_harmonised").exists()


def test_a_missing_background_is_one_line(inputs, capsys):
    root, _, _ = inputs
    code = edit_main([str(root / "blend.mp4"), "--background", str(root / "nope.png"), "--out",
                      str(root / "bad"), *MODEL])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "nope.png: no such background file" in err
    assert not (root / "bad").exists()  # refused before decomposing
