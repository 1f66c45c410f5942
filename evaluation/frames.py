"""VBench's frame sampling and preprocessing, reproduced with the same torchvision calls.

VBench decodes every frame to float32 0..255 tensors and resizes those (so bicubic overshoot is NOT clamped)
for aesthetic and both consistency metrics; its text-alignment path resizes uint8 tensors (rounded and clamped).
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from evaluation.errors import EvaluationError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VBENCH_SIZE = 224
DYNAMIC_DEGREE_FPS = 8.0


def check_video(frames: np.ndarray, name: str = "video", min_frames: int = 1) -> np.ndarray:
    """The one input contract of every metric: uint8 [T, H, W, 3] with at least `min_frames` frames."""
    if not isinstance(frames, np.ndarray):
        raise EvaluationError(f"{name}: expected a numpy uint8 array [T, H, W, 3], got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise EvaluationError(f"{name}: frames must be uint8 0..255, got {frames.dtype}; convert before scoring")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise EvaluationError(f"{name}: frames must be [T, H, W, 3], got shape {tuple(frames.shape)}")
    if frames.shape[0] < min_frames:
        raise EvaluationError(f"{name}: needs at least {min_frames} frames, got {frames.shape[0]}")
    return frames


def to_tchw(frames: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).to(dtype)


def clip_preprocess(frames: np.ndarray, size: int = VBENCH_SIZE, *, resize_uint8: bool = False) -> torch.Tensor:
    """VBench `clip_transform`: shorter side -> size (bicubic, no antialias), centre crop, /255, CLIP mean/std."""
    x = to_tchw(frames, torch.uint8 if resize_uint8 else torch.float32)
    x = TF.resize(x, size, interpolation=InterpolationMode.BICUBIC, antialias=False)
    x = TF.center_crop(x, size)
    return TF.normalize(x.float().div(255.0), CLIP_MEAN, CLIP_STD)


def dino_preprocess(frames: np.ndarray, size: int = VBENCH_SIZE) -> torch.Tensor:
    """VBench `dino_transform`: shorter side -> size (bilinear, no antialias), NO crop, /255, ImageNet mean/std."""
    x = TF.resize(to_tchw(frames), size, interpolation=InterpolationMode.BILINEAR, antialias=False)
    return TF.normalize(x.div(255.0), IMAGENET_MEAN, IMAGENET_STD)


def middle_frame_indices(num_frames: int, vlen: int) -> list[int]:
    """VBench's "middle" sampling: the middle frame of `num_frames` equal segments, padded with the last one."""
    n = min(num_frames, vlen)
    bounds = np.linspace(0, vlen, n + 1).astype(int)
    idx = [int((lo + hi - 1) // 2) for lo, hi in zip(bounds[:-1], bounds[1:])]
    return idx + [idx[-1]] * (num_frames - len(idx))


def fps_stride(fps: float, target_fps: float = DYNAMIC_DEGREE_FPS) -> int:
    """Keep every round(fps / target)-th frame, as VBench's dynamic degree does (at least every frame)."""
    if not fps or fps <= 0:
        raise EvaluationError(f"fps must be positive to sample frames at ~{target_fps:g} fps, got {fps!r}")
    return max(1, round(fps / target_fps))
