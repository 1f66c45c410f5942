"""Aesthetic: the LAION head by hand, the frame mean, weight files and their one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from data_engine.weights import MissingWeightsError
from evaluation.errors import WeightsFormatError
from evaluation.frames import clip_preprocess
from evaluation.metrics.aesthetic import AestheticQuality, build_head, head_scores
from model.numerics import assert_float32_close


def _head_file(tmp_path):
    w = torch.zeros(1, 768)
    w[0, 0], w[0, 1] = 10.0, 5.0
    path = tmp_path / "head.safetensors"
    save_file({"weight": w, "bias": torch.tensor([1.0])}, str(path))
    return path


def test_head_on_fixed_feature_hand_computed(tmp_path):
    head = build_head(_head_file(tmp_path))
    f = torch.zeros(2, 768)
    f[0, 0], f[0, 1] = 3.0, 4.0  # normalised: (0.6, 0.8) -> 10 * 0.6 + 5 * 0.8 + 1 = 11 -> / 10
    f[1, 1] = 7.0  # normalised: (0, 1) -> 5 + 1 = 6 -> / 10
    torch.testing.assert_close(head_scores(head, f), torch.tensor([1.1, 0.6]))


def test_video_score_is_frame_mean_of_head_over_normalised_clip_features(tmp_path):
    metric = AestheticQuality(head_weights=_head_file(tmp_path), random_init=True, tiny=True, batch_size=2)
    frames = np.random.default_rng(0).integers(0, 256, (5, 64, 80, 3), dtype=np.uint8)
    s = metric.score_video(frames)
    with torch.no_grad():
        f = F.normalize(metric.clip.encode_image(clip_preprocess(frames)), dim=-1)
    want = (10 * f[:, 0] + 5 * f[:, 1] + 1) / 10
    assert_float32_close(torch.tensor(s.details["per_frame"]), want, ulps=64, what="per-frame scores")
    assert_float32_close(torch.tensor(s.value), want.mean(), ulps=64, what="video score")


def test_missing_weights_one_line(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        AestheticQuality(weights_root=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "clip-vit-l14-openai" in msg and "LAYERFLOW_WEIGHTS" in msg
    with pytest.raises(MissingWeightsError, match="nope.pth: weight file not found"):
        AestheticQuality(head_weights=tmp_path / "nope.pth", random_init=True, tiny=True)


def test_wrong_weights_one_line(tmp_path):
    narrow = tmp_path / "narrow.safetensors"
    save_file({"weight": torch.zeros(1, 512), "bias": torch.zeros(1)}, str(narrow))
    assert build_head(narrow).in_features == 512  # the file gives the head's width ...
    mismatch = r"reads 512-d features but the CLIP \(random init\) gives 768-d"
    with pytest.raises(WeightsFormatError, match=mismatch) as err:
        AestheticQuality(head_weights=narrow, random_init=True, tiny=True)  # ... which must be the CLIP's
    assert "\n" not in str(err.value)
    two_outputs = tmp_path / "two.safetensors"
    save_file({"weight": torch.zeros(2, 768), "bias": torch.zeros(1)}, str(two_outputs))
    with pytest.raises(WeightsFormatError, match=r"wrong shape \(e.g. weight: \(2, 768\) vs \(1, 768\)\)") as err:
        build_head(two_outputs)
    assert "\n" not in str(err.value)
    pickled = tmp_path / "code.pth"
    torch.save({"weight": torch.zeros(1, 768), "bias": torch.zeros(1), "f": print}, pickled)
    with pytest.raises(WeightsFormatError, match="weights_only=True") as err:
        build_head(pickled)
    assert "\n" not in str(err.value)
