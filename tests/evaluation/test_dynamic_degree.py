"""Dynamic degree: the pair score, thresholds and decision by hand, motion known answers with a flow oracle,
and the real torchvision RAFT wiring (padding, input range, weights file)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from evaluation.errors import EvaluationError
from evaluation.metrics.dynamic_degree import DynamicDegree, is_dynamic, pad_to_multiple, thresholds, top_flow_mean
from evaluation.models.raft import build_raft


def test_top_flow_mean_hand_computed():
    u = np.arange(100, dtype=np.float32).reshape(10, 10)
    flow = np.stack([u, np.zeros_like(u)])
    assert top_flow_mean(flow) == pytest.approx(97.0)  # int(100 * 0.05) = 5 largest: 95..99
    flow = np.stack([np.full((20, 20), 3.0), np.full((20, 20), 4.0)]).astype(np.float32)
    assert top_flow_mean(torch.from_numpy(flow)) == pytest.approx(5.0)
    with pytest.raises(EvaluationError, match="too small"):
        top_flow_mean(np.zeros((2, 4, 4), np.float32))


def test_thresholds_hand_computed():
    assert thresholds(480, 720, 16) == (11.25, 4)
    assert thresholds(240, 360, 16) == (5.625, 4)
    assert thresholds(720, 256, 16) == (6.0, 4)
    # Python's round, as VBench: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2
    assert [thresholds(256, 256, n)[1] for n in (2, 3, 6, 10, 12)] == [0, 1, 2, 2, 3]


def test_is_dynamic_counts_pairs_above_threshold():
    assert is_dynamic([5, 5, 5, 3], 4.0, 3)
    assert not is_dynamic([5, 5, 5, 3], 4.0, 4)
    assert not is_dynamic([4.0, 4.0], 4.0, 1)  # strictly above
    assert is_dynamic([0.1], 4.0, 0)  # VBench returns True as soon as count >= 0
    assert not is_dynamic([], 4.0, 0)


class ShiftOracle(torch.nn.Module):
    """Test-only flow model: the global integer shift that best aligns frame 2 to frame 1, as a flow field.
    It also checks what RAFT would be given: inputs in [-1, 1], sizes padded to a multiple of 8."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def forward(self, a, b, num_flow_updates):
        assert num_flow_updates == 20
        assert a.shape[-2] % 8 == 0 and a.shape[-1] % 8 == 0
        assert a.min() >= -1 and a.max() <= 1 and a.min() < -0.5
        self.calls.append(tuple(a.shape))
        flows = []
        for x, y in zip(a, b):
            errs = {(dx, dy): float((torch.roll(y, (dy, dx), dims=(1, 2)) - x)[:, 16:-16, 16:-16].abs().mean())
                    for dx in range(-10, 11) for dy in (-1, 0, 1)}
            dx, dy = min(errs, key=errs.get)
            flows.append(torch.stack([torch.full(x.shape[1:], float(dx)), torch.full(x.shape[1:], float(dy))]))
        return [torch.stack(flows)]


def test_static_video_has_dynamic_degree_zero(make_translating):
    metric = DynamicDegree(model=ShiftOracle())
    static = np.repeat(make_translating(1, 128, 128, 0), 8, axis=0)
    s = metric.score_video(static, fps=8)
    assert s.value == 0.0 and s.details["pairs_above"] == 0 and max(s.details["pair_scores"]) == 0.0


def test_translation_is_dynamic_and_fps_sampling_matters(make_translating):
    metric = DynamicDegree(model=ShiftOracle())
    fast = make_translating(8, 128, 128, 8)  # 8 px per frame > threshold 6 * 128 / 256 = 3
    s = metric.score_video(fast, fps=8)
    assert s.value == 1.0 and s.details["pair_scores"] == pytest.approx([8.0] * 7)
    slow = make_translating(24, 128, 128, 2)  # 2 px per frame: static at 8 fps ...
    assert metric.score_video(slow, fps=8).value == 0.0
    at24 = metric.score_video(slow, fps=24)  # ... but at 24 fps every 3rd frame is kept: 6 px per pair
    assert at24.value == 1.0 and at24.details["sampled_frames"] == 8
    assert at24.details["pair_scores"] == pytest.approx([6.0] * 7)
    assert metric.aggregate([s, at24, metric.score_video(slow, fps=8)]) == pytest.approx(2 / 3)


def test_pad_to_multiple_replicates_edges_like_raft_input_padder():
    x = torch.arange(2 * 3 * 130 * 141, dtype=torch.float32).reshape(2, 3, 130, 141)
    y = pad_to_multiple(x)
    assert y.shape == (2, 3, 136, 144)
    # 'sintel' split: 6 rows -> 3 above / 3 below, 3 columns -> 1 left / 2 right
    torch.testing.assert_close(y[..., 3:133, 1:142], x)
    torch.testing.assert_close(y[..., 0, 1:142], x[..., 0, :])
    torch.testing.assert_close(y[..., 135, 1:142], x[..., -1, :])
    torch.testing.assert_close(y[..., 3:133, 143], x[..., -1])


def test_real_raft_wiring_from_weights_file(tmp_path, make_translating):
    """torchvision raft_large from a safetensors file; the score equals RAFT run by hand on padded [-1, 1] input."""
    path = tmp_path / "raft.safetensors"
    save_file(build_raft(seed=3).state_dict(), str(path))
    metric = DynamicDegree(weights=path)
    seen = []
    metric.model.register_forward_pre_hook(lambda m, args, kwargs: seen.append((args[0].shape, kwargs)),
                                           with_kwargs=True)
    frames = make_translating(2, 130, 141, 4)
    s = metric.score_video(frames, fps=8)
    assert seen[0][0] == (1, 3, 136, 144) and seen[0][1] == {"num_flow_updates": 20}
    x = torch.nn.functional.pad(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), [1, 2, 3, 3], mode="replicate")
    x = 2 * (x / 255.0) - 1
    with torch.no_grad():
        flow = metric.model(x[:1], x[1:], num_flow_updates=20)[-1][0]
    assert s.details["pair_scores"] == pytest.approx([top_flow_mean(flow)], rel=1e-5)
    assert s.details["threshold"] == pytest.approx(6 * 130 / 256)


def test_dynamic_degree_input_errors_are_one_line(make_translating):
    metric = DynamicDegree(model=ShiftOracle())
    for frames, fps, msg in [(make_translating(4, 64, 64, 1), 8, "RAFT needs at least 128x128"),
                             (make_translating(3, 128, 128, 1), 30, "need 2")]:
        with pytest.raises(EvaluationError, match=msg) as err:
            metric.score_video(frames, fps=fps)
        assert "\n" not in str(err.value)
