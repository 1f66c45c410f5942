"""`python -m model.generate` end to end on the tiny preset: prompts files, condition videos and frame folders,
the official sample layout, and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from data_engine.sources.official import OfficialSampleSource
from data_engine.video_io import decode_video, encode_png, psnr, write_video
from model.export import read_rgba_video
from model.generate import fit, main

FAST = ["--preset", "tiny", "--frames", "4", "--steps", "1", "--formats", "png,webm"]


def _meta(folder) -> dict:
    return json.loads((folder / "clip.json").read_text())


def test_generate_with_prompts_file_and_flag_override(tmp_path, capsys):
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(yaml.safe_dump({"fg_prompt": "a red kite", "bg_prompt": "a beach",
                                       "bl_prompt": "a kite over a beach"}))
    assert main([*FAST, "--prompts", str(prompts), "--bg-prompt", "a windy beach", "--out", str(tmp_path / "out")]) == 0
    folder = tmp_path / "out" / "generate"
    printed = capsys.readouterr().out
    assert str(folder) in printed and "fg_rgba.webm" in printed
    assert _meta(folder)["captions"] == {"fg": "a red kite", "bg": "a windy beach", "blend": "a kite over a beach"}
    rgba = read_rgba_video(folder / "fg_rgba.webm")
    alpha = decode_video(folder / "alpha.mp4", grey=True)
    assert rgba.shape == (4, 32, 48, 4) and alpha.shape == (4, 32, 48)
    assert np.abs(rgba[..., 3].astype(int) - alpha).mean() < 3  # the webm carries the generated alpha
    assert len(list((folder / "fg_rgba").glob("*.png"))) == 4 and not (folder / "fg_rgba.mov").exists()


def test_fg_conditioned_on_official_sample(tmp_path, official_samples):
    seq = official_samples / "DAVIS" / "480p" / "dog"
    assert main([*FAST, "--task", "fg_conditioned", "--sample", str(seq), "--out", str(tmp_path)]) == 0
    folder = tmp_path / "dog"
    (clip,) = OfficialSampleSource(seq).load(str(seq / "mask"))
    # The condition comes back exactly: the sample's mask, resized to the tiny size (lossless alpha.mp4).
    assert np.array_equal(decode_video(folder / "alpha.mp4", grey=True), fit(clip.alpha, 4, 32, 48, "alpha"))
    assert _meta(folder)["captions"]["fg"] == clip.captions.fg and clip.captions.fg.startswith("A golden retriever")


def test_conditions_from_video_file_and_frame_folder(tmp_path):
    rng = np.random.default_rng(0)
    bg = np.repeat(np.repeat(rng.integers(0, 256, (4, 8, 12, 3), dtype=np.uint8), 4, axis=1), 4, axis=2)
    write_video(tmp_path / "bg.mp4", bg, 8.0)
    assert main([*FAST, "--task", "bg_conditioned", "--background", str(tmp_path / "bg.mp4"),
                 "--out", str(tmp_path / "a")]) == 0
    given = decode_video(tmp_path / "bg.mp4")
    assert psnr(decode_video(tmp_path / "a" / "bg_conditioned" / "bg.mp4"), given) > 35

    frames = tmp_path / "blend_frames"
    frames.mkdir()
    for i, frame in enumerate(bg[:, :, ::-1]):
        (frames / f"{i:04d}.png").write_bytes(encode_png(np.ascontiguousarray(frame)))
    assert main([*FAST, "--task", "decompose", "--blend", str(frames), "--out", str(tmp_path / "b")]) == 0
    assert psnr(decode_video(tmp_path / "b" / "decompose" / "blend.mp4"), bg[:, :, ::-1]) > 35


def test_fit_resizes_and_centre_crops():
    frames = np.zeros((5, 40, 100), np.uint8)
    frames[:, :, 40:60] = 255  # a centred bright band survives the crop
    out = fit(frames, 3, 32, 48, "alpha")
    assert out.shape == (3, 32, 48)
    assert out[:, :, 24].min() == 255 and out[:, :, 0].max() == 0


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--task", "fg_conditioned"], "needs --foreground"),
        (["--task", "inpaint"], "unknown task 'inpaint'"),
        (["--preset", "cogvideox-2b"], "needs --model-dir"),
        (["--background", "nowhere.mp4"], "does not take --background"),
        (["--task", "decompose", "--blend", "nowhere.mp4"], "nowhere.mp4: no such file"),
        (["--model-dir", "nowhere_model"], "train it first (`make train STAGE=1|2|3 ARGS=--tiny`"),
    ],
)
def test_errors_are_one_line(tmp_path, capsys, argv, message):
    assert main([*FAST, *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("error: ")


@pytest.mark.parametrize("prompts, unprompted", [([], "fg, fg_1"), (["--fg-prompt", "a dog"], "fg_1"),
                                                 (["--prompts", "{prompts}"], "fg_1")])
def test_each_of_k_foregrounds_needs_a_prompt(tmp_path, capsys, prompts, unprompted):
    file = tmp_path / "prompts.yaml"
    file.write_text(yaml.safe_dump({"fg": "a dog", "bg": "a park"}))
    argv = [*FAST, "--foregrounds", "2", *(a.format(prompts=file) for a in prompts), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --foregrounds 2 needs a prompt for each foreground, but the command line gives none for {unprompted}; "
        'repeat --fg-prompt once per foreground, front first (--fg-prompt "" leaves one empty), '
        "or give them in --prompts")
    assert not (tmp_path / "out").exists()


def test_an_explicit_empty_prompt_is_a_prompt(tmp_path):
    assert main([*FAST, "--foregrounds", "2", "--fg-prompt", "a dog", "--fg-prompt", "", "--out", str(tmp_path)]) == 0
    captions = _meta(tmp_path / "generate")["captions"]
    assert (captions["fg"], captions["fg_1"]) == ("a dog", "")


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "model.generate", "--help"], capture_output=True, text=True, check=True)
    assert "--model-dir" in out.stdout and "--sample" in out.stdout


def test_the_tiny_config_reads_the_trained_model_or_none(tmp_path, repo_root, capsys):
    config = repo_root / "infra" / "configs" / "generate" / "tiny.yaml"
    assert yaml.safe_load(config.read_text())["model-dir"] == "outputs/train/tiny_stage3/final"
    assert main(["--config", str(config), "--model-dir", "none", *FAST, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "generate" / "alpha.mp4").is_file()
