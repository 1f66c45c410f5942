"""VBench's frame sampling and preprocessing, with known answers."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from data_engine.video_io import decode_video
from evaluation.errors import EvaluationError
from evaluation.frames import (
    CLIP_MEAN,
    CLIP_STD,
    check_video,
    clip_preprocess,
    dino_preprocess,
    fps_stride,
    middle_frame_indices,
)
from model.numerics import assert_float32_close


def test_middle_frame_indices_match_vbench_segments():
    assert middle_frame_indices(8, 16) == [0, 2, 4, 6, 8, 10, 12, 14]
    # linspace(0, 20, 9).astype(int) = [0, 2, 5, 7, 10, 12, 15, 17, 20]; middle of [lo, hi - 1]
    assert middle_frame_indices(8, 20) == [0, 3, 5, 8, 10, 13, 15, 18]
    assert middle_frame_indices(8, 3) == [0, 1, 2, 2, 2, 2, 2, 2]  # padded with the last frame


def test_fps_stride_samples_about_8_fps():
    assert [fps_stride(f) for f in (8, 10, 16, 24, 30, 60)] == [1, 1, 2, 3, 4, 8]
    with pytest.raises(EvaluationError, match="fps must be positive"):
        fps_stride(0)


def test_clip_preprocess_constant_frame_is_exact_normalisation():
    frames = np.full((2, 240, 360, 3), 200, np.uint8)
    x = clip_preprocess(frames)
    assert x.shape == (2, 3, 224, 224)
    want = (200 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert_float32_close(x[0, :, 100, 100], want.float(), ulps=8, what="normalised pixel")


def test_clip_preprocess_does_not_clamp_bicubic_overshoot():
    frames = np.zeros((1, 240, 360, 3), np.uint8)
    frames[:, :, 180:] = 255  # a hard edge: bicubic overshoots past 255 near it
    ceiling = (1 - CLIP_MEAN[0]) / CLIP_STD[0]
    assert clip_preprocess(frames)[0, 0].max() > ceiling + 0.05
    assert clip_preprocess(frames, resize_uint8=True)[0, 0].max() <= ceiling + 1e-5


def test_dino_preprocess_keeps_aspect_ratio_without_crop():
    assert dino_preprocess(np.zeros((1, 240, 360, 3), np.uint8)).shape == (1, 3, 224, 336)
    assert dino_preprocess(np.zeros((1, 240, 320, 3), np.uint8)).shape == (1, 3, 224, 298)


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((4, 8, 8, 3), np.float32), "must be uint8"),
    (np.zeros((4, 8, 8), np.uint8), r"\[T, H, W, 3\]"),
    (np.zeros((1, 8, 8, 3), np.uint8), "at least 2 frames"),
])
def test_check_video_one_line_errors(bad, msg):
    with pytest.raises(EvaluationError, match=msg) as err:
        check_video(bad, "clip", min_frames=2)
    assert "\n" not in str(err.value)


def test_decoding_matches_vbench_decoded_frames(vbench_ref):
    """Our PyAV decode gives the exact RGB frames VBench's decord / cv2 decoded for its reference scores."""
    videos = json.loads((vbench_ref / "scores.json").read_text())["videos"]
    for name, info in videos.items():
        frames = decode_video(vbench_ref / info["file"])
        assert hashlib.sha256(frames.tobytes()).hexdigest() == info["decoded_rgb_uint8_sha256_cv2"], name
