"""Inpaint stage: remove the object from the clip with ProPainter to get the clean background.

Reads `frames`, `mask`; writes `bg` uint8 [T, H, W, 3] and `scores["inpaint"]`.

ProPainter runs through pytorchcv's `ProPainterIterator` (RAFT flow -> recurrent flow completion -> image
propagation -> sparse transformer), composed directly so it runs on CPU and GPU; the modules are ours (local
weights or tiny random ones), so nothing downloads. Around it:
- the mask is dilated by `dilate_px` (object edges and shadows bleed past a segmentation mask);
- frames are scaled down to at most `max_side` (ProPainter's memory grows with pixels x frames), padded to a
  multiple of 8 (reflection), and clips are cut into windows of `window` frames overlapping by `overlap`, blended
  linearly across the overlap: memory stays bounded whatever the clip length;
- pixels outside the dilated mask are pasted back from the input, so they are exactly the input.
RAFT's 4-level correlation pyramid needs at least 128 px on each side after scaling; smaller clips fail clearly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_engine.stages.base import Resources, Row, Stage, StageError
from data_engine.stages.masks import dilate
from data_engine.stages.models import PROPAINTER_WEIGHTS, actor_gpu_gib, build_propainter, check_preset, device_for

MIN_SIDE = 128
# ProPainter's README: ~8 GB in fp16 for one 80-frame 720x480 window; it grows with the window's frames.
WORKING_GIB_PER_FRAME = 8.0 / 80


@dataclass(frozen=True)
class InpaintOptions:
    preset: str = "full"
    dilate_px: int = 8
    max_side: int = 960
    window: int = 80
    overlap: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        check_preset(self.preset)
        if self.window < 2 or not 0 <= self.overlap < self.window:
            raise ValueError(f"inpaint needs window >= 2 and 0 <= overlap < window, got {self.window}, {self.overlap}")
        if self.max_side < MIN_SIDE or self.dilate_px < 0:
            raise ValueError(f"inpaint needs max_side >= {MIN_SIDE} and dilate_px >= 0")


def windows(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) windows covering the clip, consecutive ones sharing `overlap` frames."""
    if num_frames <= window:
        return [(0, num_frames)]
    step, spans, start = window - overlap, [], 0
    while True:
        end = min(start + window, num_frames)
        spans.append((max(0, end - window), end))
        if end == num_frames:
            return spans
        start += step


class InpaintStage(Stage):
    name = "inpaint"
    default_resources = Resources(num_cpus=1.0, num_gpus=0.2, batch_size=1, retries=1)
    Options = InpaintOptions
    reads = frozenset({"frames", "mask"})
    writes = frozenset({"bg", "scores"})

    @classmethod
    def gpu_memory_gib(cls, opts: InpaintOptions) -> float:
        return actor_gpu_gib(opts.preset, {PROPAINTER_WEIGHTS: "float32"}, WORKING_GIB_PER_FRAME * opts.window)

    @classmethod
    def weights(cls, opts: InpaintOptions) -> tuple[str, ...]:
        return () if opts.preset == "tiny" else (PROPAINTER_WEIGHTS,)

    def setup(self) -> None:
        self.device = device_for(self.resources.num_gpus)
        self.raft, self.rfc, self.pp = (m.to(self.device) for m in build_propainter(self.opts.preset, self.opts.seed))

    def _run(self, frames: np.ndarray, hole: np.ndarray) -> np.ndarray:
        """ProPainter on one window: uint8 [t, h, w, 3] + bool [t, h, w] (h, w multiples of 8) -> float [t, h, w, 3]."""
        import torch
        from pytorchcv.models.propainter_stream import ProPainterIterator, TensorSequencer

        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(self.device)
        m = torch.from_numpy(hole[:, None].astype(np.float32)).to(self.device)
        with torch.inference_mode():
            chunks = list(ProPainterIterator(frames=TensorSequencer(x), masks=TensorSequencer(m), raft_model=self.raft,
                                             pprfc_model=self.rfc, pp_model=self.pp, use_cuda=self.device == "cuda"))
        out = torch.cat(chunks).add(1.0).mul(127.5).permute(0, 2, 3, 1).float().cpu().numpy()
        if not np.isfinite(out).all():
            raise StageError("inpaint: ProPainter produced non-finite pixels")
        return out

    def inpaint(self, frames: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bg uint8 [T, H, W, 3], the dilated hole bool [T, H, W])."""
        import cv2

        t, h, w = frames.shape[:3]
        hole = dilate(mask, self.opts.dilate_px)
        scale = min(1.0, self.opts.max_side / max(h, w))
        sh, sw = round(h * scale), round(w * scale)
        if min(sh, sw) < MIN_SIDE:
            raise StageError(f"inpaint needs frames at least {MIN_SIDE} px on each side (RAFT's correlation "
                             f"pyramid), got {h}x{w} (scaled to {sh}x{sw}); raise max_side or the clip size")
        small = frames if scale == 1.0 else np.stack([cv2.resize(f, (sw, sh), interpolation=cv2.INTER_AREA)
                                                      for f in frames])
        small_hole = hole if scale == 1.0 else np.stack([cv2.resize(m.astype(np.uint8), (sw, sh),
                                                                     interpolation=cv2.INTER_NEAREST) > 0
                                                          for m in hole])
        ph, pw = -sh % 8, -sw % 8
        padded = np.pad(small, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect")
        padded_hole = np.pad(small_hole, ((0, 0), (0, ph), (0, pw)), mode="reflect")
        acc = np.zeros(padded.shape, np.float64)
        weight = np.zeros(t, np.float64)
        spans = windows(t, self.opts.window, self.opts.overlap)
        for i, (start, end) in enumerate(spans):
            ramp = np.ones(end - start)
            lead = spans[i - 1][1] - start if i > 0 else 0  # frames shared with the previous window
            trail = end - spans[i + 1][0] if i + 1 < len(spans) else 0
            if lead:
                ramp[:lead] = np.linspace(0, 1, lead + 2)[1:-1]
            if trail:
                ramp[-trail:] = np.linspace(1, 0, trail + 2)[1:-1]
            acc[start:end] += self._run(padded[start:end], padded_hole[start:end]) * ramp[:, None, None, None]
            weight[start:end] += ramp
        filled = (acc / weight[:, None, None, None])[:, :sh, :sw]
        if scale != 1.0:
            filled = np.stack([cv2.resize(f.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC) for f in filled])
        bg = np.where(hole[..., None], np.clip(np.rint(filled), 0, 255).astype(np.uint8), frames)
        return bg, hole

    def process_batch(self, rows: list[Row]) -> list[Row]:
        out = []
        for row in rows:
            frames, mask = row.get("frames"), row.get("mask")
            if frames is None or mask is None or mask.shape != frames.shape[:3]:
                got = None if mask is None or frames is None else f"mask {mask.shape} vs frames {frames.shape}"
                out.append(self.failed(row, StageError(f"inpaint needs frames and a mask of the same size, got {got}")))
                continue
            try:
                bg, hole = self.inpaint(frames, mask)
            except StageError as exc:
                out.append(self.failed(row, exc))
                continue
            info = {"dilate_px": self.opts.dilate_px, "hole_area": float(hole.mean())}
            out.append({**row, "bg": bg, "scores": {**row.get("scores", {}), "inpaint": info}})
        return out
