"""The video-matting copy-paste source: VideoMatte240K-style fgr/ + pha/ pasted over background videos, built here
from the synthetic world; known answers for the pasted matte and the blend, determinism, and quarantine."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from local_engine import run_locally
from PIL import Image

from data_engine.engine.config import parse_config
from data_engine.schema import MID_GREY
from data_engine.shards import read_clips
from data_engine.sources.base import SourceError
from data_engine.sources.video_matting import VideoMattingOptions, VideoMattingSource
from data_engine.synthetic import SyntheticConfig, synthetic_truth
from data_engine.video_io import Geometry, decode_video, resize_crop, write_video

WORLD = SyntheticConfig(num_frames=12, height=32, width=32, seed=3)
OPTS = dict(num=6, seed=1, num_frames=8, height=40, width=48, max_start=4)


def frames_folder(folder: Path, frames: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:05d}.png")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vm")
    good, bad, backgrounds = root / "videomatte", root / "bad", root / "backgrounds"
    a, b = synthetic_truth(WORLD, 0), synthetic_truth(WORLD, 1)
    write_video(good / "fgr" / "a.mp4", a.rgb, 8, lossless=True)
    write_video(good / "pha" / "a.mp4", np.repeat(a.alpha[..., None], 3, -1), 8, lossless=True)
    frames_folder(good / "fgr" / "b", b.rgb)
    frames_folder(good / "pha" / "b", b.alpha)
    (good / "captions.json").write_text(json.dumps({"a": "a red disc", "b": "a blue ring"}))
    write_video(backgrounds / "one.mp4", synthetic_truth(WORLD, 2).bg, 8, lossless=True)
    frames_folder(backgrounds / "two", synthetic_truth(WORLD, 3).bg)
    write_video(bad / "fgr" / "c.mp4", a.rgb, 8, lossless=True)  # its alpha has another size
    frames_folder(bad / "pha" / "c", np.zeros((12, 16, 16), np.uint8))
    return good, bad, backgrounds


def source(root: Path, backgrounds: Path, **kw) -> VideoMattingSource:
    return VideoMattingSource(VideoMattingOptions(root=str(root), backgrounds=str(backgrounds), **{**OPTS, **kw}))


def test_the_pasted_matte_and_the_blend_are_the_known_ones(data):
    good, _, backgrounds = data
    src = source(good, backgrounds)
    seen = set()
    for item in src.list_inputs():
        (clip,) = src.load(item)
        s = clip.scores
        seen |= {s["fg_source"], s["bg_source"]}
        pha = src.pha[s["fg_source"]]
        alpha = np.stack([np.asarray(Image.open(p)) for p in sorted(pha.iterdir())]) if pha.is_dir() else \
            decode_video(pha, grey=True)
        window = alpha[s["fg_start"]:s["fg_start"] + OPTS["num_frames"]]
        h = round(OPTS["height"] * s["scale"])
        w = min(OPTS["width"], round(window.shape[2] * h / window.shape[1]))
        expected = np.zeros_like(clip.alpha)
        expected[:, s["top"]:s["top"] + h, s["left"]:s["left"] + w] = resize_crop(window, Geometry(h, w, 0, 0, h, w))
        assert np.array_equal(clip.alpha, expected)
        clear, solid = clip.alpha == 0, clip.alpha == 255
        assert np.array_equal(clip.blend[clear], clip.bg[clear])  # the background where nothing is pasted
        assert np.array_equal(clip.blend[solid], clip.fg[solid])  # the foreground where it is opaque
        assert (clip.fg[clear] == MID_GREY).all()
        assert clip.origin == "copy_paste" and clip.kind == "video" and clip.num_frames == OPTS["num_frames"]
        assert clip.captions.fg == {"a": "a red disc", "b": "a blue ring"}[s["fg_source"]]
        assert OPTS["height"] * 0.5 - 1 <= h <= OPTS["height"]
    assert seen == {"a", "b", "one", "two"}  # videos and frame folders, as foregrounds and as backgrounds


def test_samples_are_a_function_of_the_seed(data):
    good, _, backgrounds = data
    first = [source(good, backgrounds).load(i)[0] for i in ("0", "1", "2")]
    again = [source(good, backgrounds).load(i)[0] for i in ("0", "1", "2")]
    other = [source(good, backgrounds, seed=2).load(i)[0] for i in ("0", "1", "2")]
    assert all(np.array_equal(x.blend, y.blend) and x.scores == y.scores for x, y in zip(first, again))
    assert [x.scores for x in first] != [x.scores for x in other]


def test_bad_clips_give_one_line_reasons(data, tmp_path):
    good, bad, backgrounds = data
    with pytest.raises(SourceError, match="another size or length than its foreground"):
        source(bad, backgrounds).load("0")
    no_alpha = tmp_path / "no_alpha"
    (no_alpha / "fgr").mkdir(parents=True)
    (no_alpha / "fgr" / "a.mp4").write_bytes((good / "fgr" / "a.mp4").read_bytes())
    with pytest.raises(SourceError, match="no alpha beside it"):
        source(no_alpha, backgrounds).load("0")
    with pytest.raises(SourceError, match="fewer than num_frames"):
        source(good, backgrounds, num_frames=16).load("0")


def test_the_engine_writes_copy_paste_shards_and_quarantines_the_bad_clip(data, tmp_path):
    good, bad, backgrounds = data
    entry = {"type": "video_matting", "backgrounds": str(backgrounds), **OPTS}
    cfg = parse_config({"run": {"out": str(tmp_path / "out"), "maxcount": 4, "progress": False},
                        "clip": {"num_frames": OPTS["num_frames"], "fps": 8, "height": OPTS["height"],
                                 "width": OPTS["width"]},
                        "sources": [{**entry, "root": str(good)}, {**entry, "root": str(bad), "num": 1}],
                        "stages": ["encode"]})
    run_locally(cfg)
    out = tmp_path / "out"
    samples = list(wds.WebDataset(sorted(str(p) for p in out.glob("shard-*.tar")), shardshuffle=False))
    assert len(samples) == OPTS["num"]
    meta = [json.loads(s["json"]) for s in samples]
    assert {m["origin"] for m in meta} == {"copy_paste"} and all("scale" in m["scores"] for m in meta)
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert len(quarantine) == 1 and "another size or length" in quarantine[0]["message"]
    assert "\n" not in quarantine[0]["message"]
    assert len(list(read_clips(out))) == OPTS["num"]
