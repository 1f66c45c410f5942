"""Split a probed video into clips of N frames at a target fps and resolution.

Policy (`ClipPolicy`, the engine config's `clip:` section; defaults are the paper's training clips):
- time: clip frames are taken at `fps` (8) on the video's own timestamps, nearest frame to each tick, so
  variable-frame-rate videos are resampled correctly; a video slower than `fps` keeps its own rate, and a window
  where a variable-frame-rate video slows below `fps` (the nearest frame would repeat) is skipped and counted in
  `scores['split']`: frames are never duplicated. Clips are consecutive windows of `num_frames` (16) ticks,
  `stride` ticks apart (default: no overlap), at most `max_clips` per video; a tail shorter than one clip is
  dropped.
- space: `resize: cover` scales the frame to cover `height` x `width` (480 x 720) and centre-crops the rest;
  `resize: stretch` scales to exactly that size. Frames are scaled one at a time as they are decoded, so memory
  holds one full-size frame at most; videos above `max_pixels` are rejected by `probe` before any decode.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from data_engine.clip_policy import ClipPolicy
from data_engine.pixels import frame_rgb
from data_engine.schema import clip_key
from data_engine.stages.base import Resources, Row, Stage, StageError
from data_engine.uri import open_video
from data_engine.video_io import (
    Geometry,
    VideoDecodeError,
    apply_codec_threads,
    apply_geometry,
    cover_geometry,
    presentation_times,
    unreadable,
)


class VideoRejected(StageError):
    """A readable video the clip policy refuses (too short, too large...); the message says why and what to change."""


def geometry(src_h: int, src_w: int, policy: ClipPolicy) -> Geometry:
    if policy.resize == "stretch":
        return Geometry(policy.height, policy.width, 0, 0, policy.height, policy.width)
    return cover_geometry(src_h, src_w, policy.height, policy.width)


def output_fps(source_fps: float, policy: ClipPolicy) -> float:
    return min(policy.fps, source_fps) if source_fps > 0 else policy.fps


def clip_windows(times: np.ndarray, fps: float, policy: ClipPolicy) -> tuple[list[list[int]], int]:
    """Per clip, the index (presentation order) of the frame nearest to each tick of `fps`; and how many windows
    were refused because a frame would appear twice in them.

    `times` are the frames' presentation times in seconds, sorted. A variable-frame-rate video can slow below
    `fps` for a while (gaps longer than a tick): there the nearest frame repeats, and a clip with a frozen frame
    teaches the model motion that was not there, so such windows are skipped, never padded.
    """
    if times.size == 0:
        return [], 0
    span = float(times[-1] - times[0])
    ticks = times[0] + np.arange(int(np.floor(span * fps + 1e-6)) + 1) / fps
    right = np.clip(np.searchsorted(times, ticks), 1, times.size - 1) if times.size > 1 else np.zeros(ticks.size, int)
    if times.size > 1:
        left = right - 1
        nearest = np.where(np.abs(times[left] - ticks) <= np.abs(times[right] - ticks), left, right)
    else:
        nearest = right
    stride = policy.stride or policy.num_frames
    windows, repeated = [], 0
    for start in range(0, ticks.size - policy.num_frames + 1, stride):
        window = [int(i) for i in nearest[start : start + policy.num_frames]]
        if len(set(window)) < len(window):
            repeated += 1
            continue
        windows.append(window)
        if policy.max_clips is not None and len(windows) >= policy.max_clips:
            break
    return windows, repeated


def usable_ticks(num_frames: int, duration: float, source_fps: float, policy: ClipPolicy) -> int:
    """How many clip frames a video of this length yields at the policy's rate (the probe-time estimate)."""
    if num_frames <= 1:
        return num_frames
    fps = output_fps(source_fps, policy)
    span = max(0.0, duration - (1.0 / source_fps if source_fps > 0 else 0.0))
    return min(num_frames, int(np.floor(span * fps + 1e-6)) + 1)


def decode_clips(src: Any, label: str,
                 policy: ClipPolicy) -> tuple[list[np.ndarray], list[list[int]], float, Geometry, int]:
    """Decode only the frames the clips need, scaled as they come. Returns clips, their frame indices, fps, geometry
    and how many windows were refused for repeating frames."""
    import av

    try:
        container = av.open(src, mode="r")
    except (av.error.FFmpegError, OSError) as exc:
        raise unreadable(label, exc) from exc
    with container:
        if not container.streams.video:
            raise VideoDecodeError(f"{label}: no video stream")
        stream = container.streams.video[0]
        apply_codec_threads(stream)
        tb = float(stream.time_base)
        pts = presentation_times(container, stream, label)
        rate = stream.average_rate or stream.guessed_rate
        source_fps = float(rate) if rate else 0.0
        fps = output_fps(source_fps, policy)
        windows, repeated = clip_windows(pts * tb, fps, policy)
        if not windows and repeated:
            raise VideoRejected(
                f"{label}: every {policy.num_frames}-frame window at {fps:g} fps would repeat frames (variable frame "
                f"rate slower than {fps:g} fps in places; frames are never duplicated); lower clip.fps to keep it"
            )
        if not windows:
            raise VideoRejected(
                f"{label}: {pts.size} frame(s) give fewer than {policy.num_frames} frames at {fps:g} fps "
                f"(shorter than one clip); lower clip.num_frames or clip.fps to keep such videos"
            )
        index_of_pts = {int(p): i for i, p in enumerate(pts)}
        wanted = {i for w in windows for i in w}
        last = max(wanted)
        container.seek(0, stream=stream)
        frames: dict[int, np.ndarray] = {}
        geo: Geometry | None = None
        try:
            for frame in container.decode(stream):
                idx = index_of_pts.get(int(frame.pts)) if frame.pts is not None else None
                if idx in wanted:
                    rgb = frame_rgb(frame)
                    geo = geo or geometry(rgb.shape[0], rgb.shape[1], policy)
                    frames[idx] = apply_geometry(rgb, geo)
                if idx is not None and idx >= last and len(frames) == len(wanted):
                    break
        except av.error.FFmpegError as exc:
            if not frames:
                raise unreadable(label, exc) from exc
    complete = [w for w in windows if all(i in frames for i in w)]
    if not complete:
        raise VideoDecodeError(f"{label}: truncated or corrupt video: decoded {len(frames)} of the {len(wanted)} "
                               "frames needed")
    assert geo is not None
    return [np.stack([frames[i] for i in w]) for w in complete], complete, fps, geo, repeated


def source_name(source_id: str) -> str:
    """`{stem}_{hash}`: readable, and unique even when two folders hold files of the same name."""
    stem = source_id.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return f"{stem}_{hashlib.sha1(source_id.encode()).hexdigest()[:6]}"


class SplitStage(Stage):
    """Reads `source_id`, `probe`, `source_name` (optional: the key prefix, default `source_name(source_id)`);
    writes one row per clip with `key`, `clip_key`, `frames`, `fps`, `frame_range`,
    `frame_indices`, `geometry`, and `scores['split']`."""

    name = "split"
    default_resources = Resources(num_cpus=1.0, batch_size=1, retries=1)
    Options = ClipPolicy
    reads = frozenset({"source_id", "probe"})  # probe rejects what the policy refuses before anything is decoded
    writes = frozenset({"key", "clip_key", "frames", "fps", "frame_range", "frame_indices", "geometry", "scores"})

    def process_batch(self, rows: list[Row]) -> list[Row]:
        out: list[Row] = []
        for row in rows:
            uri = row["source_id"]
            try:
                clips, windows, fps, geo, repeated = decode_clips(open_video(uri), uri, self.opts)
            except (VideoDecodeError, StageError, OSError) as exc:
                out.append(self.failed(row, exc))
                continue
            vfr = bool(row.get("probe", {}).get("variable_frame_rate", False))
            for n, (frames, window) in enumerate(zip(clips, windows)):
                key = clip_key(row.get("source_name") or source_name(uri), n)
                split = {"clip": n, "fps": fps, "variable_frame_rate": vfr,
                         "windows_refused_for_repeated_frames": repeated}
                scores = {**row.get("scores", {}), "split": split}
                out.append({
                    **row,
                    "key": key,
                    "clip_key": key,
                    "frames": frames,
                    "fps": fps,
                    "frame_range": (window[0], window[-1] + 1),
                    "frame_indices": window,
                    "geometry": geo,
                    "scores": scores,
                })
        return out
