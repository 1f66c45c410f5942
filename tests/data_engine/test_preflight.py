"""Pre-flight: every config and input problem is one line before Ray starts (exit 2, nothing written), and inputs
that cannot be read are quarantined with a reason a person understands."""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest

from data_engine.cli import main
from data_engine.clip_policy import ClipPolicy
from data_engine.defaults import configs_dir
from data_engine.engine.pipeline import INPUT, WEIGHT, StageActor
from data_engine.engine.resources import StagePlan
from data_engine.sources.videos import list_videos
from data_engine.stages.base import FAILED, Resources
from data_engine.video_io import encode_video, write_video

SYNTHETIC_CONFIG = configs_dir("engine") / "synthetic_videos.yaml"
PERCEPTION_FULL = configs_dir("engine") / "perception_full.yaml"


def one_line_error(capsys, argv: list[str]) -> str:
    import ray

    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert not ray.is_initialized()
    return err[0]


def dataset(out, *extra: str) -> list[str]:
    return ["dataset", "--config", str(SYNTHETIC_CONFIG), "--out", str(out), "--no-progress", *extra]


def test_out_that_is_a_file(tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    line = one_line_error(capsys, dataset(out))
    assert "is a file" in line and "--out names a folder" in line
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize("limit", ["-1", "0"])
def test_limit_below_one(tmp_path, capsys, limit):
    line = one_line_error(capsys, dataset(tmp_path / "out", "--limit", limit))
    assert f"got {limit}" in line and "leave it out" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dry", [True, False])
def test_glob_that_matches_nothing(tmp_path, capsys, dry):
    (tmp_path / "videos").mkdir()
    argv = ["dataset", "--input", str(tmp_path / "videos" / "*.mp4"), "--out", str(tmp_path / "out")]
    line = one_line_error(capsys, argv + (["--dry-run"] if dry else []))
    assert "matches no video files" in line and "*.mp4" in line
    assert not (tmp_path / "out").exists()


def test_every_stage_that_wants_a_gpu_is_named_at_once(tmp_path, capsys):
    argv = ["dataset", "--config", str(PERCEPTION_FULL), "--out", str(tmp_path / "out"), "--dry-run",
            "--set", "run.num_gpus=0", "--set", "run.check_weights=false", "--input", str(SYNTHETIC_CONFIG)]
    line = one_line_error(capsys, argv)
    for stage in ("tag", "segment", "fg_check", "inpaint", "caption"):
        assert f"--set stages.{stage}.num_gpus=0" in line
    assert not (tmp_path / "out").exists()


def probe(path) -> dict:
    policy = ClipPolicy(num_frames=4, fps=8, height=32, width=48)
    a = StageActor(StagePlan("probe", Resources(), 1), policy)
    [row] = a.process([{INPUT: str(path), WEIGHT: Fraction(1), "key": str(path), "source_id": str(path)}])[0]
    return row


def test_dangling_symlink_is_listed_and_quarantined_with_its_reason(tmp_path):
    folder = tmp_path / "videos"
    write_video(folder / "good.mp4", np.zeros((16, 32, 48, 3), np.uint8), 8)
    os.symlink(tmp_path / "gone.mp4", folder / "link.mp4")
    listed = list_videos(str(folder))
    assert listed == sorted([str((folder / "good.mp4").resolve()), str(folder / "link.mp4")])
    failure = probe(folder / "link.mp4")[FAILED]
    assert failure["error_type"] == "VideoDecodeError"
    assert "dangling symlink" in failure["message"] and "gone.mp4" in failure["message"]
    assert "\n" not in failure["message"]


def test_truncated_video_says_so_and_keeps_ffmpegs_detail(tmp_path):
    good = encode_video(np.zeros((16, 32, 48, 3), np.uint8), 8)
    path = tmp_path / "cut.mp4"
    path.write_bytes(good[: len(good) // 3])
    message = probe(path)[FAILED]["message"]
    assert message.startswith(f"{path}: truncated or corrupt video (")
    assert "Invalid data" in message or "moov" in message or "End of file" in message


def test_captions_are_printable_utf8_whatever_the_model_emits():
    from data_engine.schema import Captions, printable_text

    raw = "a red\x00 disc\ufffd\u200b glides\n\tleft \ud800over\x07 sand"
    assert printable_text(raw) == "a red disc glides left over sand"
    captions = Captions(fg=raw, bg="\x00\ufffd", blend="plain words")
    assert captions.as_dict() == {"fg": "a red disc glides left over sand", "bg": "", "blend": "plain words"}
    assert all(t.isprintable() for t in captions.as_dict().values())


@pytest.mark.parametrize("override, bad", [("stages.tag.options.nope=1", "nope"),
                                           ("stages.segment.options.sam_gapp=4", "sam_gapp"),
                                           ("stages.compose.options.colour=red", "colour")])
def test_stage_option_typos_fail_the_dry_run(tmp_path, capsys, override, bad):
    argv = ["dataset", "--out", str(tmp_path / "out"), "--dry-run", "--set", override]
    line = one_line_error(capsys, argv)
    assert bad in line and line.split(":")[1].strip().startswith("stages.")


def test_a_stage_cannot_bypass_its_options_check():
    from data_engine.stages.base import Stage

    with pytest.raises(TypeError, match="declare `Options"):
        class HandParsed(Stage):  # noqa: F841 (the class statement itself must fail)
            name = "hand_parsed"

            def __init__(self, **options):
                super().__init__(**options)

            def process_batch(self, rows):
                return rows


def test_every_missing_model_is_named_at_once_in_the_dry_run(tmp_path, capsys, monkeypatch):
    from data_engine import weights

    monkeypatch.setenv(weights.ENV_VAR, str(tmp_path / "weights"))
    gpus_off = [a for stage in ("tag", "segment", "fg_check", "inpaint", "caption")
                for a in ("--set", f"stages.{stage}.num_gpus=0")]
    # Which stages have work depends on the inputs, so the check follows the listing: give it a video.
    write_video(tmp_path / "videos" / "clip.mp4", np.zeros((8, 32, 48, 3), np.uint8), 8)
    argv = ["dataset", "--config", str(PERCEPTION_FULL), "--input", str(tmp_path / "videos"),
            "--out", str(tmp_path / "out"), "--dry-run", *gpus_off]
    line = one_line_error(capsys, argv)
    names = ["clip-vit-l14-openai", "grounding-dino-base", "sam-vit-h", "sam2.1-hiera-large",
             "qwen2.5-vl-7b-instruct", "propainter"]
    assert f"layerflow weights download {' '.join(names)}" in line
    assert "qwen2.5-vl-7b-instruct (for fg_check, caption)" in line and str(tmp_path / "weights") in line
    assert not (tmp_path / "out").exists()
