"""Frame consistency: VBench's formula by hand, identical frames -> 1, VBench's pair-weighted aggregate, and
DINO's position-embedding interpolation on timm's blocks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.errors import EvaluationError
from evaluation.metrics.base import VideoScore
from evaluation.metrics.frame_consistency import FrameConsistency, consistency_from_features
from evaluation.models.dino import build_dino, dino_pos_embed
from model.numerics import FLOAT32_EPS, assert_float32_close


def test_formula_hand_computed():
    f = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-1.0, 0.0]])
    sims = consistency_from_features(f)
    r = math.sqrt(0.5)
    # i=1: cos(f0,f1)=0, cos(f0,f1)=0 -> 0; i=2: (r + r)/2; i=3: cos(f2,f3)=-r -> 0, cos(f0,f3)=-1 -> 0
    assert sims["pair"] == pytest.approx([0.0, r, 0.0])
    assert sims["cos_first"] == pytest.approx([0.0, r, -1.0])


@pytest.mark.parametrize("backbone", ["clip", "dino"])
def test_identical_frames_score_one(backbone):
    metric = FrameConsistency(backbone, random_init=True, tiny=True)
    frame = np.random.default_rng(0).integers(0, 256, (1, 96, 144, 3), dtype=np.uint8)
    s = metric.score_video(np.repeat(frame, 5, axis=0))
    assert s.value == pytest.approx(1.0, abs=16 * FLOAT32_EPS) and s.details["pairs"] == 4
    noisy = np.random.default_rng(1).integers(0, 256, (5, 96, 144, 3), dtype=np.uint8)
    assert metric.score_video(noisy).value < 1.0 - 1e-4
    assert ("background_consistency" if backbone == "clip" else "subject_consistency") in metric.variant


def test_scores_stay_at_most_one_when_a_float32_cosine_rounds_above_it():
    # Identical features whose float32 self-cosine rounds up past 1 (a few ulps): find one among seeded vectors.
    rounds_up = None
    for seed in range(50):
        f = F.normalize(torch.randn(1, 512, generator=torch.Generator().manual_seed(seed)), dim=-1)
        if F.cosine_similarity(f, f, dim=-1).item() > 1.0:
            rounds_up = f
            break
    assert rounds_up is not None, "no seeded vector whose self-cosine rounds above 1; widen the search"
    sims = consistency_from_features(rounds_up.expand(3, -1))
    assert max(sims["cos_prev"]) > 1.0  # the raw cosines (diagnostics) keep the rounding ...
    assert sims["pair"] == [1.0, 1.0]  # ... the scores are capped: identical frames score exactly 1


def test_aggregate_is_over_all_pairs_not_videos():
    metric = FrameConsistency.__new__(FrameConsistency)
    a = VideoScore(1.0, {"sum": 2.0, "pairs": 2})
    b = VideoScore(0.0, {"sum": 0.0, "pairs": 1})
    assert metric.aggregate([a, b]) == pytest.approx(2 / 3)


def test_one_frame_is_rejected():
    metric = FrameConsistency("clip", random_init=True, tiny=True)
    with pytest.raises(EvaluationError, match="at least 2 frames"):
        metric.score_video(np.zeros((1, 64, 64, 3), np.uint8))


def test_dino_pos_embed_follows_dino_not_timm():
    from timm.layers import resample_abs_pos_embed

    pos = torch.randn(1, 197, 8, generator=torch.Generator().manual_seed(0))
    assert dino_pos_embed(pos, 224, 224, 16) is pos
    ours = dino_pos_embed(pos, 224, 336, 16)
    assert ours.shape == (1, 1 + 14 * 21, 8)
    torch.testing.assert_close(ours[:, 0], pos[:, 0])
    timm_way = resample_abs_pos_embed(pos, (14, 21), num_prefix_tokens=1)
    assert (ours - timm_way).abs().max() > 1e-3  # the two resamplers differ; VBench's numbers need DINO's
    flat = torch.ones(1, 197, 4)
    torch.testing.assert_close(dino_pos_embed(flat, 224, 336, 16), torch.ones(1, 295, 4))  # bicubic keeps constants
    # DINO resamples even a same-size grid when the input is not square (its scale is (14.1 / 14))
    assert not torch.equal(dino_pos_embed(pos, 224, 230, 16), pos)


def test_dino_forward_equals_timm_at_square_input():
    model = build_dino(tiny=True, seed=1)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_float32_close(model(x), model.vit.forward_features(x)[:, 0], ulps=64, what="DINO features")


def test_dino_drops_a_partial_patch_like_its_stride_16_conv():
    """VBench turns 240x320 frames into 224x298; DINO's conv ignores the last 10 columns instead of failing."""
    model = build_dino(tiny=True, seed=1)
    vit = model.vit
    x = torch.randn(2, 3, 224, 298, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        patches = torch.nn.functional.conv2d(x, vit.patch_embed.proj.weight, vit.patch_embed.proj.bias, stride=16)
        tokens = torch.cat((vit.cls_token.expand(2, -1, -1), patches.flatten(2).transpose(1, 2)), dim=1)
        want = vit.norm(vit.blocks(tokens + dino_pos_embed(vit.pos_embed, 224, 298, 16)))[:, 0]
        torch.testing.assert_close(model(x), want)
    frames = np.random.default_rng(4).integers(0, 256, (3, 240, 320, 3), dtype=np.uint8)
    assert 0.0 < FrameConsistency("dino", random_init=True, tiny=True).score_video(frames).value < 1.0
