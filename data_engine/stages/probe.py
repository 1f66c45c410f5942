"""Probe each input video (size, fps, frame count, codec, variable frame rate) and reject, before any decode,
what the clip policy cannot use: unreadable files, videos above `max_pixels`, videos shorter than one clip.
"""
from __future__ import annotations

from dataclasses import asdict

from data_engine.clip_policy import ClipPolicy
from data_engine.stages.base import Resources, Row, Stage
from data_engine.stages.split import VideoRejected, usable_ticks
from data_engine.uri import open_video
from data_engine.video_io import VideoDecodeError, probe_video


class ProbeStage(Stage):
    """Reads `source_id` (path or URI); writes `probe` (the `VideoInfo` fields)."""

    name = "probe"
    default_resources = Resources(num_cpus=0.25, batch_size=4, retries=1)
    Options = ClipPolicy
    reads = frozenset({"source_id"})
    writes = frozenset({"probe"})

    def check(self, row: Row) -> Row:
        uri = row["source_id"]
        info = probe_video(open_video(uri), name=uri)
        policy: ClipPolicy = self.opts
        if info.width * info.height > policy.max_pixels:
            raise VideoRejected(
                f"{uri}: {info.width}x{info.height} is above clip.max_pixels={policy.max_pixels}; "
                f"raise clip.max_pixels or downscale the video first"
            )
        ticks = usable_ticks(info.num_frames, info.duration, info.fps, policy)
        if ticks < policy.num_frames:
            raise VideoRejected(
                f"{uri}: {info.num_frames} frame(s) over {info.duration:.2f} s give {ticks} frame(s) at "
                f"{min(policy.fps, info.fps or policy.fps):g} fps, shorter than one clip of {policy.num_frames}; "
                f"lower clip.num_frames or clip.fps to keep such videos"
            )
        return {**row, "probe": asdict(info)}

    def process_batch(self, rows: list[Row]) -> list[Row]:
        out = []
        for row in rows:
            try:
                out.append(self.check(row))
            except (VideoDecodeError, VideoRejected, OSError) as exc:
                out.append(self.failed(row, exc))
        return out
