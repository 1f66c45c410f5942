"""The engine's model-free stages and the stage wrapper, run in-process (no Ray)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from data_engine.clip_policy import ClipPolicy
from data_engine.engine.pipeline import DROPPED, INPUT, WEIGHT, StageActor
from data_engine.engine.resources import StagePlan
from data_engine.schema import over_grey
from data_engine.sources.base import SourceError
from data_engine.sources.synthetic_videos import write_synthetic_video
from data_engine.sources.videos import list_videos
from data_engine.stages.base import FAILED, Resources, Stage, is_failed
from data_engine.stages.split import apply_geometry, clip_windows, decode_clips, geometry
from data_engine.stages.synthetic_layers import NO_LAYERS
from data_engine.synthetic import SyntheticConfig, synthetic_clip
from data_engine.video_io import encode_video, psnr, write_video

POLICY = ClipPolicy(num_frames=4, fps=8, height=32, width=48)


def write_timed(path: Path, frames: np.ndarray, times_ms) -> Path:
    """An H.264 mp4 whose frames have the given presentation times (variable frame rate when uneven)."""
    from fractions import Fraction as F

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.codec_context.time_base = s.time_base = F(1, 1000)
        for f, t in zip(frames, times_ms):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts, vf.time_base = int(t), F(1, 1000)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def numbered_frames(n: int, h: int = 32, w: int = 48) -> np.ndarray:
    """Flat frames whose grey level encodes the frame index (10 * i), readable after lossy coding."""
    return np.stack([np.full((h, w, 3), 10 * i, np.uint8) for i in range(n)])


def actor(stage: str, options: dict | None = None, retries: int = 1, batch: int = 4) -> StageActor:
    import data_engine.engine.pipeline as pipeline

    opts = pipeline.resolve_stage(stage).parse_options(options or {})  # typed, as the run's plan does
    return StageActor(StagePlan(stage, Resources(batch_size=batch, retries=retries), 1), opts)


def run_rows(a: StageActor, rows: list[dict]) -> list[dict]:
    return a.process(rows)[0]


def video_row(path) -> dict:
    return {INPUT: str(path), WEIGHT: Fraction(1), "key": str(path), "source_id": str(path)}


# -- split: time and space ------------------------------------------------------------------------------------------
def test_clip_windows_nearest_frame_known_answer():
    times = np.arange(60) / 30.0  # 2 s at 30 fps
    windows, repeated = clip_windows(times, 8.0, ClipPolicy(num_frames=4, fps=8, stride=4))
    ticks = np.arange(16) / 8.0
    expected = [int(np.argmin(np.abs(times - t))) for t in ticks]
    assert windows == [expected[0:4], expected[4:8], expected[8:12], expected[12:16]] and repeated == 0
    assert clip_windows(times, 8.0, ClipPolicy(num_frames=4, fps=8, max_clips=2)) == (windows[:2], 0)
    assert clip_windows(times, 8.0, ClipPolicy(num_frames=17, fps=8)) == ([], 0)


def test_clip_windows_never_repeat_a_frame_where_a_vfr_video_slows_down():
    # 24 fps for 1 s, a 0.5 s freeze in the stream (one frame held), then 24 fps again: ticks at 8 fps in the
    # gap would fall on the same frame.
    times = np.concatenate([np.arange(24) / 24, 1.5 + np.arange(24) / 24])
    windows, repeated = clip_windows(times, 8.0, ClipPolicy(num_frames=4, fps=8))
    assert repeated >= 1 and windows
    assert all(len(set(w)) == len(w) and w == sorted(w) for w in windows)


def bursty_times_ms(bursts: int) -> np.ndarray:
    """Bursts of 10 frames 40 ms apart with 400 ms silences: about 13 fps on average, slower than 8 fps in the gaps."""
    return np.concatenate([b * 760 + 40 * np.arange(10) for b in range(bursts)])


def test_split_never_duplicates_frames_of_a_vfr_video(tmp_path):
    times = bursty_times_ms(4)
    path = write_timed(tmp_path / "bursty.mp4", np.zeros((times.size, 32, 48, 3), np.uint8), times)
    rows = run_rows(actor("split", {**POLICY.__dict__}), [video_row(path)])
    assert rows and not any(is_failed(r) for r in rows)
    for row in rows:
        assert len(set(row["frame_indices"])) == len(row["frame_indices"])
        assert row["scores"]["split"]["windows_refused_for_repeated_frames"] >= 1
    long_clips = {**POLICY.__dict__, "num_frames": 8}
    [row] = run_rows(actor("split", long_clips), [video_row(path)])
    assert row[FAILED]["error_type"] == "VideoRejected" and "would repeat frames" in row[FAILED]["message"]


def test_split_resamples_variable_frame_rate_by_timestamp(tmp_path):
    times = np.cumsum([0] + [40 if i % 2 else 110 for i in range(19)])  # alternating 40 / 110 ms gaps
    path = write_timed(tmp_path / "vfr.mp4", numbered_frames(20), times)
    clips, windows, fps, _, repeated = decode_clips(str(path), "vfr", POLICY)
    assert repeated == 0
    ticks = np.arange(12) / 8.0
    nearest = [int(np.argmin(np.abs(times / 1000.0 - t))) for t in ticks]
    assert windows == [nearest[0:4], nearest[4:8], nearest[8:12]]
    for clip, window in zip(clips, windows):  # the decoded pixels are those frames, not their neighbours
        assert np.abs(clip[:, 0, 0, 0].astype(int) - 10 * np.array(window)).max() <= 2


def test_cover_geometry_scales_then_centre_crops():
    geo = geometry(100, 300, ClipPolicy(height=50, width=50))
    assert (geo.scaled_h, geo.scaled_w, geo.top, geo.left) == (50, 150, 0, 50)
    ramp = np.tile(np.arange(300, dtype=np.uint8)[None, :], (100, 1))
    out = apply_geometry(ramp, geo)
    assert out.shape == (50, 50)
    # columns 100..199 of the source (the centre third) survive, halved in resolution
    assert abs(int(out[0, 0]) - 100) <= 1 and abs(int(out[0, -1]) - 198) <= 1
    stretch = geometry(100, 300, ClipPolicy(height=50, width=50, resize="stretch"))
    assert apply_geometry(ramp, stretch).shape == (50, 50) and stretch.left == 0


def test_split_downscales_a_large_video(tmp_path):
    path = write_video(tmp_path / "big.mp4", numbered_frames(12, 360, 640), 24)
    rows = run_rows(actor("split", {**POLICY.__dict__}), [video_row(path)])
    assert not any(is_failed(r) for r in rows)
    assert [r["frames"].shape for r in rows] == [(4, 32, 48, 3)]  # 12 frames at 24 fps -> 4 ticks at 8 fps
    assert rows[0]["frame_indices"] == [0, 3, 6, 9]


# -- probe: bad inputs end as failures with a reason -------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    good = encode_video(numbered_frames(16), 8)
    files = {
        "zero": d / "zero.mp4",
        "text": d / "text.mp4",
        "truncated": d / "truncated.mp4",
        "one_frame": d / "one_frame.mp4",
        "short": d / "short.mp4",
        "huge": d / "huge.mp4",
        "missing": d / "missing.mp4",
    }
    files["zero"].write_bytes(b"")
    files["text"].write_text("this is not a video\n" * 20)
    files["truncated"].write_bytes(good[: len(good) // 3])
    write_video(files["one_frame"], numbered_frames(1), 8)
    write_video(files["short"], numbered_frames(3), 8)
    write_video(files["huge"], numbered_frames(16, 240, 320), 8)
    return files


EXPECTED_PROBE_FAILURES = {
    "zero": ("VideoDecodeError", "zero-byte"),
    "text": ("VideoDecodeError", "truncated or corrupt video"),
    "truncated": ("VideoDecodeError", ""),
    "one_frame": ("VideoRejected", "shorter than one clip"),
    "short": ("VideoRejected", "shorter than one clip"),
    "huge": ("VideoRejected", "above clip.max_pixels"),
    "missing": ("VideoDecodeError", "no such file"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PROBE_FAILURES))
def test_probe_rejects_bad_input_with_reason(bad_inputs, name):
    policy = {**POLICY.__dict__, "max_pixels": 200 * 200}
    [row] = run_rows(actor("probe", policy), [video_row(bad_inputs[name])])
    assert is_failed(row), f"{name} passed probe"
    error_type, text = EXPECTED_PROBE_FAILURES[name]
    failure = row[FAILED]
    assert failure["stage"] == "probe" and failure["error_type"] == error_type
    assert text in failure["message"] and str(bad_inputs[name]) in failure["message"]
    assert row[WEIGHT] == 1 and row[INPUT] == str(bad_inputs[name])


def test_probe_passes_vfr_and_records_it(tmp_path):
    path = write_timed(tmp_path / "vfr.mp4", numbered_frames(20), np.cumsum([0] + [40, 110] * 9 + [40]))
    [row] = run_rows(actor("probe", POLICY.__dict__), [video_row(path)])
    assert not is_failed(row)
    assert row["probe"]["variable_frame_rate"] and row["probe"]["num_frames"] == 20


# -- layers -----------------------------------------------------------------------------------------------------------
def test_compose_builds_the_four_layers():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 8, 12, 3), dtype=np.uint8)
    mask = rng.integers(0, 256, (4, 8, 12), dtype=np.uint8)
    bg = rng.integers(0, 256, (4, 8, 12, 3), dtype=np.uint8)
    base = {INPUT: "v", WEIGHT: Fraction(1), "key": "v_1-00000", "clip_key": "v_1-00000", "frames": frames,
            "mask": mask, "bg": bg, "fps": 8.0, "frame_range": (0, 4), "captions": {"fg": "a", "bg": "b", "blend": "c"}}
    fanned = {**base, "key": "v_1-00000-03"}
    single, obj3, missing = run_rows(actor("compose"), [base, fanned, {**base, "mask": None}])
    clip = single["clip"]
    assert clip.key == "v_1-00000-00" and obj3["clip"].key == "v_1-00000-03"
    assert np.array_equal(clip.fg, over_grey(frames, mask)) and np.array_equal(clip.blend, frames)
    assert np.array_equal(clip.alpha, mask) and np.array_equal(clip.bg, bg)
    assert clip.captions.bg == "b" and "frames" not in single
    assert is_failed(missing) and "segment or synthetic_layers" in missing[FAILED]["message"]



def test_compose_takes_the_soft_alpha_when_segment_wrote_one():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (4, 8, 12, 3), dtype=np.uint8)
    soft = rng.integers(1, 255, (4, 8, 12), dtype=np.uint8)
    mask = np.where(soft >= 128, 255, 0).astype(np.uint8)
    base = {INPUT: "v", WEIGHT: Fraction(1), "key": "v_1-00000-01", "clip_key": "v_1-00000", "frames": frames,
            "mask": mask, "soft_alpha": soft, "bg": frames[::-1].copy(), "fps": 8.0, "frame_range": (0, 4)}
    row, bad = run_rows(actor("compose"), [base, {**base, "soft_alpha": soft[:, :4]}])
    clip = row["clip"]
    assert np.array_equal(clip.alpha, soft) and np.array_equal(clip.fg, over_grey(frames, soft))
    assert not np.array_equal(clip.fg, over_grey(frames, mask)) and np.array_equal(clip.blend, frames)
    assert "soft_alpha" not in row and "mask" not in row
    assert is_failed(bad) and "soft_alpha must be uint8 (4, 8, 12)" in bad[FAILED]["message"]

def test_synthetic_layers_align_with_the_decoded_video(tmp_path):
    cfg = SyntheticConfig(num_clips=1, num_frames=16, height=72, width=120, seed=3)
    path = write_synthetic_video(cfg, 0, tmp_path)
    policy = ClipPolicy(num_frames=8, fps=8, height=64, width=96)
    rows = [video_row(path)]
    for name in ("probe", "split", "synthetic_layers", "compose"):
        rows = run_rows(actor(name, policy.__dict__ if name in ("probe", "split") else {}), rows)
    assert len(rows) == 2 and not any(is_failed(r) for r in rows)
    truth = synthetic_clip(cfg, 0)
    geo = geometry(72, 120, policy)
    for row in rows:
        clip, idx = row["clip"], row["frame_indices"]
        want_alpha = np.stack([apply_geometry(truth.alpha[i], geo) for i in idx])
        want_blend = np.stack([apply_geometry(truth.blend[i], geo) for i in idx])
        assert np.abs(clip.alpha.astype(int) - want_alpha).max() <= 3
        assert psnr(clip.blend, want_blend) > 35
        shifted = np.stack([apply_geometry(truth.blend[min(i + 1, 15)], geo) for i in idx])
        assert psnr(clip.blend, shifted) < psnr(clip.blend, want_blend) - 3  # alignment is what makes it match
        assert clip.captions.fg == truth.captions.fg


def test_synthetic_layers_refuses_other_videos(tmp_path):
    path = write_video(tmp_path / "real.mp4", numbered_frames(8), 8)
    row = {**video_row(path), "frame_indices": [0, 1], "geometry": geometry(32, 48, POLICY)}
    [out] = run_rows(actor("synthetic_layers"), [row])
    assert is_failed(out) and NO_LAYERS in out[FAILED]["message"]


# -- the wrapper: accounting, retries, isolation ----------------------------------------------------------------------
class FanOut(Stage):
    """A protocol exercise: row n -> n copies (0 = filtered); rows marked `boom` raise; counts its calls."""

    name = "fanout"
    default_resources = Resources()
    calls: dict[str, int] = {}

    def process_batch(self, rows):
        out = []
        for row in rows:
            FanOut.calls[row["key"]] = FanOut.calls.get(row["key"], 0) + 1
            if row.get("boom"):
                raise RuntimeError(f"cannot process {row['key']}")
            if row["n"] == 0:
                self.drop(row, "nothing in it")
            out += [{**row, "key": f"{row['key']}-{i:02d}"} for i in range(row["n"])]
        return out


def test_wrapper_conserves_weight_isolates_failures_and_retries(monkeypatch):
    import data_engine.engine.pipeline as pipeline

    monkeypatch.setattr(pipeline, "resolve_stage", lambda name: FanOut)
    FanOut.calls.clear()
    a = actor("fanout", retries=2)
    rows = [{INPUT: f"in{n}", WEIGHT: Fraction(1, 2), "key": f"k{n}", "n": n} for n in range(4)]
    rows.append({INPUT: "bad", WEIGHT: Fraction(1), "key": "kbad", "n": 1, "boom": True})
    finished = {INPUT: "done", WEIGHT: Fraction(1), "key": "f", "clip": object()}
    out, (n_out, n_drop, n_fail) = a.process(rows)
    passing = a.step([finished])  # finished clips bypass non-encode stages untouched
    assert passing[0]["key"] == "f" and FanOut.calls.get("f") is None
    by_input: dict[str, Fraction] = {}
    for r in out:
        by_input[r[INPUT]] = by_input.get(r[INPUT], 0) + r[WEIGHT]
    assert by_input == {"in0": Fraction(1, 2), "in1": Fraction(1, 2), "in2": Fraction(1, 2), "in3": Fraction(1, 2),
                        "bad": 1}
    assert (n_out, n_drop, n_fail) == (1 + 2 + 3, 1, 1)
    [drop] = [r for r in out if DROPPED in r]
    assert drop[INPUT] == "in0" and drop[DROPPED] == {"stage": "fanout", "reasons": ["nothing in it"]}
    [fail] = [r for r in out if is_failed(r)]
    assert fail[INPUT] == "bad" and fail[FAILED]["attempts"] == 3 and "cannot process kbad" in fail[FAILED]["message"]
    # 3 whole-batch attempts, then each row alone: the good rows once more, the bad one 3 more times
    assert FanOut.calls["k1"] == 4 and FanOut.calls["kbad"] == 6


class Halve(Stage):
    """Records each batch it is given; keeps even `n`, drops odd ones."""

    name = "halve"
    batches: list[int] = []

    def process_batch(self, rows):
        Halve.batches.append(len(rows))
        out = []
        for row in rows:
            if row["n"] % 2:
                self.drop(row, "odd")
            else:
                out.append({**row, "halved": row["n"] // 2})
        return out


def test_fused_pool_equals_its_stages_one_after_another(monkeypatch):
    import data_engine.engine.pipeline as pipeline
    from data_engine.engine.resources import PoolPlan

    monkeypatch.setattr(pipeline, "resolve_stage", {"fanout": FanOut, "halve": Halve}.__getitem__)
    rows = [{INPUT: f"in{n}", WEIGHT: Fraction(1), "key": f"k{n}", "n": n} for n in range(1, 5)]
    members = (StagePlan("fanout", Resources(batch_size=1), 2), StagePlan("halve", Resources(batch_size=3), 2))
    plan = PoolPlan("fanout+halve", Resources(batch_size=1), 2, stages=members)
    Halve.batches.clear()
    fused = pipeline.unpack(pipeline.PoolActor(plan, {})(pipeline.pack(rows)))
    assert Halve.batches and max(Halve.batches) <= 3  # each member gets batches of its own size
    apart = actor("halve", batch=3).step(actor("fanout", batch=1).step(rows))
    strip = lambda rs: sorted((r[INPUT], r["key"], r[WEIGHT], r.get("halved"), str(r.get(DROPPED))) for r in rs)  # noqa: E731
    assert strip(fused) == strip(apart)
    assert sum(r[WEIGHT] for r in fused if r[INPUT] == "in3") == 1  # fan-out and drops still add up per input
    assert {r.get("halved") for r in fused if DROPPED not in r} == {1, 2}


# -- video inputs -----------------------------------------------------------------------------------------------------
def test_video_listing_folder_glob_listfile_and_uri(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for p in ("a/one.mp4", "a/b/two.MOV", "a/notes.txt"):
        (tmp_path / p).write_bytes(b"x")
    folder = list_videos(str(tmp_path / "a"))
    assert folder == [str((tmp_path / p).resolve()) for p in ("a/b/two.MOV", "a/one.mp4")]  # sorted, recursive
    assert list_videos(str(tmp_path / "a" / "**" / "*.mp4")) == [str((tmp_path / "a/one.mp4").resolve())]
    uri = list_videos(f"file://{tmp_path / 'a'}")
    assert uri == sorted(f"file://{p}" for p in folder)
    listing = tmp_path / "videos.txt"
    listing.write_text("# inputs\na/one.mp4\n\nfile:///elsewhere/x.mp4\n/abs/missing.mp4\n")
    assert list_videos(str(listing)) == [str((tmp_path / "a/one.mp4").resolve()), "file:///elsewhere/x.mp4",
                                         "/abs/missing.mp4"]
    with pytest.raises(SourceError, match="no such file or folder"):
        list_videos(str(tmp_path / "nope"))
