"""The engine end to end on a local Ray (one instance for the module): bad inputs, resume (and its refusal under
another config), quarantine after a retry, layered sources, and a driver killed mid-run."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from data_engine.cli import main
from data_engine.engine.config import load_config, parse_config
from data_engine.engine.folder_config import FOLDER_CONFIG_NAME
from data_engine.engine.pipeline import WORKER_DEATH_RETRIES
from data_engine.engine.runner import run
from data_engine.engine.state import load_records
from data_engine.layers_sidecar import LAYERS_SIDECAR
from data_engine.shards import complete_shards, read_clips
from data_engine.sources.synthetic_videos import write_synthetic_video
from data_engine.stages.synthetic_layers import NO_LAYERS
from data_engine.synthetic import SyntheticConfig, synthetic_clip
from data_engine.video_io import encode_video, psnr, write_video

REPO = Path(__file__).resolve().parents[2]
CLIP = {"num_frames": 8, "fps": 8, "height": 32, "width": 48, "max_pixels": 200 * 200}
VIDEO_STAGES = ["probe", "split", "synthetic_layers", "compose", "encode"]
SMALL = SyntheticConfig(num_clips=2, num_frames=16, height=40, width=56, seed=5)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield
    ray.shutdown()


def config(out: Path, sources: list[dict], **run: object) -> dict:
    return {"run": {"out": str(out), "maxcount": 4, "progress": False, **run}, "clip": dict(CLIP),
            "sources": sources, "stages": list(VIDEO_STAGES)}


def keys(out: Path) -> list[str]:
    return pq.read_table(out / "manifest.parquet", columns=["key"]).column("key").to_pylist()


def write_vfr_synthetic(cfg: SyntheticConfig, index: int, path: Path) -> Path:
    """A synthetic clip as a variable-frame-rate mp4 (alternating 60/190 ms gaps), with its layers sidecar."""
    from fractions import Fraction

    import av

    clip = synthetic_clip(cfg, index)
    times = np.cumsum([0] + [60 if i % 2 else 190 for i in range(clip.num_frames - 1)])
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = clip.width, clip.height, "yuv444p"
        s.codec_context.time_base = s.time_base = Fraction(1, 1000)
        for f, t in zip(clip.blend, times):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = int(t), Fraction(1, 1000)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    Path(str(path) + LAYERS_SIDECAR).write_text(json.dumps({"generator": "synthetic", "config": asdict(cfg),
                                                            "index": index}))
    return path


@pytest.fixture(scope="module")
def messy_inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("messy")
    videos = d / "videos"
    f = {f"good{i}": write_synthetic_video(SMALL, i, videos) for i in range(2)}
    f["vfr"] = write_vfr_synthetic(SMALL, 0, videos / "vfr.mp4")
    grey = np.stack([np.full((32, 48, 3), 9 * i, np.uint8) for i in range(16)])
    f["no_layers"] = write_video(videos / "no_layers.mp4", grey, 8)
    f["zero"] = videos / "zero.mp4"
    f["zero"].write_bytes(b"")
    f["text"] = videos / "text.mp4"
    f["text"].write_text("not a video\n" * 50)
    good = encode_video(grey, 8)
    f["truncated"] = videos / "truncated.mp4"
    f["truncated"].write_bytes(good[: len(good) // 3])
    f["one_frame"] = write_video(videos / "one_frame.mp4", grey[:1], 8)
    f["short"] = write_video(videos / "short.mp4", grey[:5], 8)
    f["huge"] = write_video(videos / "huge.mp4", np.zeros((16, 240, 320, 3), np.uint8), 8)
    f["listfile"] = d / "more.txt"
    f["missing"] = d / "gone.mp4"
    f["listfile"].write_text(f"{f['missing']}\n")
    return f


EXPECTED_QUARANTINE = {
    "zero": ("probe", "VideoDecodeError", "zero-byte"),
    "text": ("probe", "VideoDecodeError", "truncated or corrupt video"),
    "truncated": ("probe", "VideoDecodeError", ""),
    "one_frame": ("probe", "VideoRejected", "shorter than one clip"),
    "short": ("probe", "VideoRejected", "shorter than one clip"),
    "huge": ("probe", "VideoRejected", "above clip.max_pixels"),
    "missing": ("probe", "VideoDecodeError", "no such file"),
}


LAYERED = {"type": "synthetic_world", "num_clips": 3, "num_frames": 4, "height": 32, "width": 48, "seed": 9}
LAYERED_CFG = SyntheticConfig(**{k: v for k, v in LAYERED.items() if k != "type"})


def MESSY_SOURCES(f: dict[str, Path]) -> list[dict]:
    """11 video inputs, then 3 layered ones (which skip the video stages)."""
    return [{"type": "videos", "input": str(f["good0"].parent)}, {"type": "videos", "input": str(f["listfile"])},
            LAYERED]


@pytest.fixture(scope="module")
def messy_run(ray_local, messy_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("messy_out")
    cfg = parse_config(config(out, MESSY_SOURCES(messy_inputs), limit=12))
    return cfg, run(cfg)


def test_bad_inputs_end_in_quarantine_and_the_run_completes(messy_inputs, messy_run):
    cfg, summary = messy_run
    out = cfg.out
    q = pq.read_table(out / "quarantine.parquet").to_pylist()
    by_input = {row["input"]: row for row in q}
    for name, (stage, error_type, text) in EXPECTED_QUARANTINE.items():
        row = by_input[str(messy_inputs[name].resolve())]
        assert (row["stage"], row["error_type"]) == (stage, error_type), name
        assert text in row["message"] and "\n" not in row["message"]
    # a readable real video: split into clips, then refused by the model-free layer stage, clip by clip
    no_layers = [r for r in q if r["input"].startswith(str(messy_inputs["no_layers"].resolve()))]
    assert len(no_layers) == 2 and all(r["stage"] == "synthetic_layers" and NO_LAYERS in r["message"]
                                       for r in no_layers)
    assert len(q) == len(EXPECTED_QUARANTINE) + 2
    # good inputs: 2 clips each from the two synthetic videos; the VFR one (16 frames over 2 s) gives 2 at 8 fps
    # plus the first layered input (the limit of 12 inputs stops there)
    written = keys(out)
    assert len(written) == len(set(written)) == 7
    sources = Counter(Path(c.source_id).name for c in read_clips(out))
    assert sources == {"synthetic_s5_00000.mp4": 2, "synthetic_s5_00001.mp4": 2, "vfr.mp4": 2,
                       "synthetic:seed=9:index=0": 1}
    stats = json.loads((out / "stats.json").read_text())
    stages = stats["engine"]["stages"]
    assert stages["probe"]["rows_in"] == 11 and stages["probe"]["failed"] == 7
    assert stages["synthetic_layers"]["failed"] == 2 and stages["encode"]["rows_out"] == 7
    assert stages["split"]["rows_in"] == 4  # the layered clip went around the video stages
    assert stats["engine"]["inputs"] == {"total": 14, "done_before": 0, "this_run": 12, "rerun": 0, "recorded": 12,
                                         "unfinished": 0, "status": {"ok": 4, "failed": 8}}
    assert summary.counts.written == 7 and summary.counts.quarantined == 9


def test_one_pool_per_stage_gives_the_same_samples_quarantine_and_counts(messy_inputs, messy_run, tmp_path):
    """Fusion (the default) only changes where stages run: the same run unfused must write the same dataset.
    Runs before the rerun test below, which adds samples to messy_run's output."""
    cfg, fused = messy_run
    out = tmp_path / "unfused"
    apart = run(parse_config(config(out, MESSY_SOURCES(messy_inputs), limit=12, fuse=False)))
    assert [p.name for p in fused.plans] == ["+".join(["source", *VIDEO_STAGES])]
    assert [p.name for p in apart.plans] == ["source", *VIDEO_STAGES]
    quarantine = lambda o: sorted((r["input"], r["stage"], r["error_type"], r["message"])  # noqa: E731
                                  for r in pq.read_table(o / "quarantine.parquet").to_pylist())
    assert quarantine(out) == quarantine(cfg.out)
    counts = lambda s: {n: (v["rows_in"], v["rows_out"], v["dropped"], v["failed"]) for n, v in s.stages.items()}  # noqa: E731
    assert counts(apart) == counts(fused)
    ours, theirs = ({c.key: c for c in read_clips(o)} for o in (cfg.out, out))
    assert sorted(ours) == sorted(theirs) and len(ours) == 7
    for key, clip in ours.items():
        other = theirs[key]
        assert clip.metadata() == other.metadata() and np.array_equal(clip.alpha, other.alpha), key
        # Colour: the stages hand encode identical pixels either way (checked by hash), but x264's bytes for them
        # occasionally differ between worker processes (42-47 dB apart when they do); a wrong layer is ~20 dB off.
        assert all(psnr(clip.layer(n), other.layer(n)) > 38 for n in ("fg", "bg", "blend")), key


def test_vfr_clips_carry_the_true_layers_of_the_frames_they_show(messy_inputs, messy_run):
    cfg, _ = messy_run
    truth = synthetic_clip(SMALL, 0)
    from data_engine.clip_policy import ClipPolicy
    from data_engine.stages.split import apply_geometry, geometry

    geo = geometry(SMALL.height, SMALL.width, ClipPolicy(**CLIP))
    for clip in read_clips(cfg.out):
        if not clip.source_id.endswith("vfr.mp4"):
            continue
        assert clip.scores["split"]["variable_frame_rate"] is True
        # ticks every 125 ms over gaps of 190/60 ms: nearest frames are not every other frame
        start, end = clip.frame_range
        blend_match = []
        for t in range(clip.num_frames):
            errs = [np.abs(clip.blend[t].astype(int) - apply_geometry(truth.blend[i], geo)).mean() for i in range(16)]
            blend_match.append(int(np.argmin(errs)))
        alpha_want = np.stack([apply_geometry(truth.alpha[i], geo) for i in blend_match])
        assert np.abs(clip.alpha.astype(int) - alpha_want).max() <= 3  # matte follows the frame actually shown
        assert blend_match[0] == start and blend_match[-1] == end - 1


def assert_stats_match_tables(out: Path) -> None:
    """stats.json counts what manifest.parquet and quarantine.parquet hold, and no input whose record says ok
    keeps a quarantine row."""
    stats = json.loads((out / "stats.json").read_text())
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert stats["samples"] == len(manifest) == len({r["key"] for r in manifest})
    assert stats["shards"] == len(complete_shards(out)) and stats["frames"] == sum(r["num_frames"] for r in manifest)
    assert stats["quarantined"] == len(quarantine)
    assert stats["quarantined_by_stage"] == dict(Counter(r["stage"] for r in quarantine))
    ok = {i for i, r in load_records(out).items() if r["status"] == "ok"}
    assert not [r["input"] for r in quarantine if r["input"].split(" [")[0] in ok]


def test_the_stats_count_what_the_tables_hold(messy_run):
    assert_stats_match_tables(messy_run[0].out)


def test_rerun_does_only_what_is_not_recorded(messy_inputs, messy_run):
    cfg, first = messy_run
    before = keys(cfg.out)
    again = run(parse_config(config(cfg.out, MESSY_SOURCES(messy_inputs))))
    # the 12 recorded inputs (failed ones included) are skipped; the 2 layered inputs beyond the limit run now
    assert again.counts.inputs_skipped_done == 12 and again.counts.written == 2
    assert again.stages["source"]["rows_in"] == 2 and again.stages.get("probe", {}).get("rows_in", 0) == 0
    new_keys = [synthetic_clip(LAYERED_CFG, i).key for i in (1, 2)]
    assert sorted(keys(cfg.out)) == sorted(before + new_keys)
    assert len(pq.read_table(cfg.out / "quarantine.parquet")) == len(EXPECTED_QUARANTINE) + 2
    truth = synthetic_clip(LAYERED_CFG, 2)
    [got] = [c for c in read_clips(cfg.out) if c.key == truth.key]
    assert np.abs(got.alpha.astype(int) - truth.alpha).max() <= 2 and psnr(got.bg, truth.bg) > 38
    assert got.origin == "synthetic" and got.captions == truth.captions
    assert_stats_match_tables(cfg.out)


def test_a_retried_input_that_succeeds_leaves_quarantine(ray_local, tmp_path):
    """An input listed before it exists is quarantined; once it exists, a retry writes its samples, and its row
    leaves quarantine.parquet and stats.quarantined. An input that fails again keeps one row."""
    videos = tmp_path / "videos"
    good = write_synthetic_video(SMALL, 0, videos)
    late = tmp_path / "later" / good.name.replace("00000", "00001")  # where clip 1's video will be written
    zero = videos / "zero.mp4"
    zero.write_bytes(b"")
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"{good}\n{late}\n{zero}\n")
    sources = [{"type": "videos", "input": str(listing)}]
    out = tmp_path / "out"
    quarantined = lambda: sorted(Path(r["input"]).name for r in pq.read_table(out / "quarantine.parquet").to_pylist())  # noqa: E731

    run(parse_config(config(out, sources)))
    assert quarantined() == [late.name, "zero.mp4"]
    assert_stats_match_tables(out)
    assert write_synthetic_video(SMALL, 1, late.parent) == late
    again = run(parse_config(config(out, sources, retry_quarantined=True)))
    assert again.counts.inputs_skipped_done == 1 and again.counts.written == 2
    assert quarantined() == ["zero.mp4"]
    assert json.loads((out / "stats.json").read_text())["quarantined"] == 1
    assert Counter(Path(c.source_id).name for c in read_clips(out)) == {good.name: 2, late.name: 2}
    assert {Path(i).name: r["status"] for i, r in load_records(out).items()} == \
        {good.name: "ok", late.name: "ok", "zero.mp4": "failed"}
    assert_stats_match_tables(out)


# -- the folder's config on resume ------------------------------------------------------------------------------------
def test_a_resume_that_would_change_samples_is_refused_before_any_work(ray_local, tmp_path, capsys):
    """A half-done folder, then a finished one: another value or another config is refused in one line that names
    the keys, and nothing in the folder changes; a resume that changes only run settings finishes the folder, and
    stats.json names the config that made it."""
    out = tmp_path / "out"
    made = tmp_path / "made.yaml"
    raw = {**config(out, [LAYERED]), "stages": ["encode"]}
    made.write_text(yaml.safe_dump(raw))
    assert run(load_config(made, limit=1)).counts.written == 1  # 1 of the 3 inputs
    capsys.readouterr()

    def refused(*argv: str) -> str:
        files = lambda: {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}  # noqa: E731
        before = files()
        code = main(["dataset", *argv, "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert files() == before
        assert err[0].startswith(f"error: {out} was made with another config (")
        assert err[0].endswith(f"resume it with the config recorded in {out / FOLDER_CONFIG_NAME} ({made}), or pass "
                               "another --out to start a new folder")
        return err[0]

    assert "(clip.num_frames 8 -> 16)" in refused("--config", str(made), "--set", "clip.num_frames=16")
    line = refused("--config", "synthetic_videos")
    for change in ('sources.0.type "synthetic_world" -> "synthetic_videos"', "clip.height 32 -> 480",
                   'stages ["encode"] -> ["probe", "split"'):
        assert change in line

    elsewhere = tmp_path / "same_samples.yaml"
    elsewhere.write_text(yaml.safe_dump({**raw, "run": {**raw["run"], "maxcount": 2, "num_cpus": 1}}))
    resumed = run(load_config(elsewhere))
    capsys.readouterr()
    assert (resumed.counts.inputs_skipped_done, resumed.counts.written) == (1, 2)
    assert sorted(keys(out)) == sorted(synthetic_clip(LAYERED_CFG, i).key for i in range(3))
    stats = (out / "stats.json").read_bytes()
    assert json.loads(stats)["engine"]["config"] == str(made)
    refused("--config", str(made), "--set", "clip.num_frames=16")  # a finished folder too
    assert (out / "stats.json").read_bytes() == stats


# -- kill and resume ---------------------------------------------------------------------------------------------------
# Enough inputs that samples reach the sink over seconds, not in one burst, so the kill lands mid-run.
KILL_VIDEOS = 20
KILL_SOURCES = [{"type": "synthetic_videos", "num_clips": KILL_VIDEOS, "num_frames": 16, "height": 40, "width": 56,
                 "seed": 2}]


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(ray_local, tmp_path):
    reference = tmp_path / "reference"
    run(parse_config(config(reference, KILL_SOURCES, maxcount=1)))
    want = keys(reference)
    assert len(want) == 2 * KILL_VIDEOS == len(set(want))

    out = tmp_path / "killed"
    cfg_file = tmp_path / "engine.yaml"
    cfg_file.write_text(yaml.safe_dump(config(out, KILL_SOURCES, maxcount=1)))
    cmd = [sys.executable, "-m", "data_engine.cli", "dataset", "--config", str(cfg_file), "--no-progress"]
    import ray

    # The CLI joins this module's Ray as a second driver (RAY_ADDRESS, as on a real cluster); killing it kills
    # the driver and its job's actors, not the cluster.
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
)
    try:
        deadline = time.time() + 120
        while len(complete_shards(out)) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = [c.key for c in read_clips(out)]  # readers see only complete shards, even right after the kill
    assert 0 < len(partial) < len(want) and set(partial) <= set(want)
    assert not (out / "stats.json").exists() or "engine" not in json.loads((out / "stats.json").read_text())

    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    got = keys(out)
    assert sorted(got) == sorted(want) and len(got) == len(set(got))  # no loss, no duplicates
    assert not list(out.glob("*.tmp")) and not list((out / "_inputs").glob("*.tmp"))
    assert sorted(c.key for c in read_clips(out)) == sorted(want)
    stats = json.loads((out / "stats.json").read_text())["engine"]
    assert stats["inputs"]["done_before"] + stats["inputs"]["this_run"] == KILL_VIDEOS


# -- a worker that dies on one input ----------------------------------------------------------------------------------
DYING_STAGE = '''
import os

from data_engine.stages.base import Stage


class DieOnVideoOne(Stage):
    """Kills its own process (as a segfault or the OOM killer would) on the clips of one video."""

    def process_batch(self, rows):
        if any(r["source_id"].endswith("_00001.mp4") for r in rows):
            os._exit(1)
        return rows
'''


def test_an_input_that_kills_its_worker_is_quarantined_and_the_run_completes(tmp_path):
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "dying_stage.py").write_text(DYING_STAGE)
    sources = [{"type": "synthetic_videos", "num_clips": 3, "num_frames": 8, "height": 40, "width": 56, "seed": 3}]
    raw = config(tmp_path / "out", sources)
    raw["stages"] = ["probe", "split", "dying_stage:DieOnVideoOne", "synthetic_layers", "compose", "encode"]
    cfg_file = tmp_path / "engine.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))
    # Its own local Ray, started by the CLI: the workers inherit PYTHONPATH and can import the plugin stage.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(plugin), str(REPO), os.environ.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "data_engine.cli", "dataset", "--config", str(cfg_file), "--no-progress"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    assert sorted(Path(c.source_id).name for c in read_clips(out)) == ["synthetic_s3_00000.mp4",
                                                                       "synthetic_s3_00002.mp4"]
    [lost] = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert lost["input"].endswith("synthetic_s3_00001.mp4")
    assert (lost["stage"], lost["error_type"]) == ("engine", "WorkerLost") and "died" in lost["message"]
    # It could have been a lost node: it ran again, and killed its worker there too. Each pass spends the task's
    # retries; a pass is one more when its death also took the rows of an input batched beside it, which the
    # rerun then brings back.
    passes, rest = divmod(lost["attempts"], WORKER_DEATH_RETRIES + 1)
    assert rest == 0 and passes in (2, 3)
    assert re.search(r"worker lost: [12] input\(s\) did not all come back", " ".join(done.stderr.split()))
    stats = json.loads((out / "stats.json").read_text())["engine"]
    assert stats["inputs"]["status"] == {"ok": 2, "failed": 1} and stats["inputs"]["unfinished"] == 0
    assert stats["inputs"]["rerun"] == {2: 1, 3: 3}[passes]
