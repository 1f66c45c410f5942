"""K foreground layers in the data: the shard format (format 2: fg_k / alpha_k members), the synthetic world with
K objects, and copy-paste of K objects. A one-foreground sample, clip and source stay exactly what they were."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from data_engine.engine.config import ConfigError, SourceSpec
from data_engine.engine.inputs import source_options
from data_engine.schema import LAYERS, MID_GREY, LayeredClip, composite_layers, layer_names, over_grey
from data_engine.shards import (
    MANIFEST_DEFAULTS,
    EncodeOptions,
    ShardFormatError,
    ShardSink,
    decode_sample,
    encode_clip,
    member_names,
    read_clips,
    shard_urls,
)
from data_engine.sources.copy_paste import CopyPasteSource
from data_engine.sources.synthetic_videos import write_synthetic_video
from data_engine.stages.base import FAILED
from data_engine.stages.synthetic_layers import SyntheticLayersStage
from data_engine.synthetic import COLOURS, SyntheticConfig, synthetic_clip, synthetic_truth
from data_engine.video_io import encode_alpha, encode_video, psnr

WORLD = SyntheticConfig(num_frames=4, height=32, width=48, seed=5)
LOSSLESS = EncodeOptions(lossless_alpha=True)
# The json keys of a format-1 sample (encode_clip before K foregrounds existed).
FORMAT_1_KEYS = {"key", "kind", "captions", "fps", "num_frames", "height", "width", "origin", "source_id",
                 "frame_range", "scores", "engine_version", "alpha_lossless"}
# sha256 of synthetic_clip(WORLD, i), i = 0, 1, 2 (`_digest`), computed with the generator before it had
# `num_objects`: a VAE checkpoint and the toy-world tests depend on these exact clips.
ONE_OBJECT_DIGESTS = ["39eb31169b5519950b2bf4b2c9695f804fa5213eeb3ca76d6d2e489a1244ae22",
                      "76eb16ede08ccdd95af8e55c4aedac546e25e1887a0bc21a93bc98b7fc0b9854",
                      "47c8126c094f52d165dca698e7f073e0ba3e707162a1aced03295fd31d9dbbdd"]


def world(num_objects: int) -> SyntheticConfig:
    return SyntheticConfig(num_frames=4, height=32, width=48, seed=5, num_objects=num_objects)


def as_image(clip: LayeredClip) -> LayeredClip:
    """The clip's first frame as an image sample (every layer, one frame)."""
    more = {name: arr[:1] for name, arr in clip.more_layers.items()}
    return LayeredClip(key=clip.key + "-img", fg=clip.fg[:1], alpha=clip.alpha[:1], bg=clip.bg[:1],
                       blend=clip.blend[:1], captions=clip.captions, kind="image", origin="image",
                       more_layers=more, depth_order=clip.depth_order)


def assert_same_clip(got: LayeredClip, want: LayeredClip) -> None:
    """Metadata exact, alphas exact (lossless alpha or PNG), colour layers exact for images and >= 35 dB for video
    (32 x 48 textures compress worse than full-size clips; another layer in its place is below 25 dB)."""
    assert got.metadata() == want.metadata()
    assert got.layer_names == want.layer_names == layer_names(want.num_foregrounds)
    for name in want.layer_names:
        if want.kind == "image" or name.startswith("alpha"):
            assert np.array_equal(got.layer(name), want.layer(name)), name
        else:
            assert psnr(got.layer(name), want.layer(name)) >= 35.0, name


def _digest(clip: LayeredClip) -> str:
    h = hashlib.sha256()
    for name in LAYERS:
        h.update(clip.layer(name).tobytes())
    h.update(json.dumps([clip.captions.as_dict(), clip.scores, clip.key, clip.source_id], sort_keys=True).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def clips():
    """One clip of K = 1, 2, 3 objects."""
    return {k: synthetic_clip(world(k), 0) for k in (1, 2, 3)}


# -- the shard format -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("kind", ["video", "image"])
def test_k_foregrounds_round_trip_through_encode_and_decode(clips, k, kind):
    clip = clips[k] if kind == "video" else as_image(clips[k])
    meta, sample = encode_clip(clip, LOSSLESS)
    ext = "png" if kind == "image" else "mp4"
    assert set(sample) == {"__key__", *(f"{name}.{ext}" for name in layer_names(k)), "json"}
    assert (meta["layer_format"], meta["num_foregrounds"], meta["depth_order"]) == (2, k, list(range(k)))
    back = decode_sample(sample)
    assert back.num_foregrounds == k and back.depth_order == tuple(range(k))
    assert back.captions == clip.captions and len(back.captions.more_fg) == k - 1
    assert_same_clip(back, clip)


@pytest.mark.parametrize("kind", ["video", "image"])
def test_k_foregrounds_round_trip_through_the_sink_and_manifest(tmp_path, clips, kind):
    written = [c if kind == "video" else as_image(c) for c in clips.values()]
    with ShardSink(tmp_path, maxcount=2, options=LOSSLESS) as sink:
        for clip in written:
            assert sink.write(clip)
    by_key = {c.key: c for c in written}
    back = list(read_clips(tmp_path))
    assert sorted(c.key for c in back) == sorted(by_key)
    for clip in back:
        assert_same_clip(clip, by_key[clip.key])
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "manifest.parquet").to_pylist()}
    for key, clip in by_key.items():
        assert rows[key]["num_foregrounds"] == clip.num_foregrounds
        assert json.loads(rows[key]["captions_more_fg"]) == list(clip.captions.more_fg)


def test_one_foreground_sample_is_the_format_1_sample(clips):
    """Same members, same bytes, same json as encode_clip wrote before K foregrounds existed."""
    clip = clips[1]
    meta, sample = encode_clip(clip)
    assert set(sample) == {"__key__", *member_names("video")}
    assert set(meta) == FORMAT_1_KEYS and set(json.loads(sample["json"])) == FORMAT_1_KEYS
    format_1 = {
        "fg.mp4": encode_video(clip.fg, clip.fps),
        "bg.mp4": encode_video(clip.bg, clip.fps),
        "blend.mp4": encode_video(clip.blend, clip.fps),
        "alpha.mp4": encode_alpha(clip.alpha, clip.fps, lossless=False),
        "json": json.dumps({**clip.metadata(), "alpha_lossless": False}, sort_keys=True).encode(),
    }
    assert {k: v for k, v in sample.items() if k != "__key__"} == format_1


def test_a_json_without_num_foregrounds_reads_as_one_foreground(clips):
    """What a format-1 reader sees of a K = 2 sample: its first foreground, the bg and the blend."""
    _, sample = encode_clip(clips[2], LOSSLESS)
    meta = json.loads(sample["json"])
    for name in ("layer_format", "num_foregrounds", "depth_order"):
        del meta[name]
    meta["captions"] = {name: meta["captions"][name] for name in ("fg", "bg", "blend")}
    back = decode_sample({**sample, "json": json.dumps(meta).encode()})
    assert back.num_foregrounds == 1 and back.metadata() == {k: v for k, v in meta.items() if k != "alpha_lossless"}
    assert np.array_equal(back.alpha, clips[2].alpha)


def test_a_missing_member_or_newer_format_is_a_one_line_error(clips):
    _, sample = encode_clip(clips[3])
    broken = {k: v for k, v in sample.items() if k != "alpha_2.mp4"}
    with pytest.raises(ShardFormatError, match=r"alpha_2\.mp4 missing \(its json says 3 foreground") as err:
        decode_sample(broken)
    assert "\n" not in str(err.value) and clips[3].key in str(err.value)
    newer = {**sample, "json": json.dumps({**json.loads(sample["json"]), "layer_format": 3}).encode()}
    with pytest.raises(ShardFormatError, match="layer_format 3 is newer than this reader's 2"):
        decode_sample(newer)
    zero = {**sample, "json": json.dumps({**json.loads(sample["json"]), "num_foregrounds": 0}).encode()}
    with pytest.raises(ShardFormatError, match="num_foregrounds must be an integer >= 1, got 0"):
        decode_sample(zero)


def test_plain_webdataset_sees_the_extra_members(tmp_path, clips):
    with ShardSink(tmp_path) as sink:
        sink.write(clips[1])
        sink.write(clips[2])
    samples = {s["__key__"]: s for s in wds.WebDataset(shard_urls(tmp_path), shardshuffle=False)}
    one, two = samples[clips[1].key], samples[clips[2].key]
    assert set(one) - {"__key__", "__url__", "__local_path__"} == set(member_names("video"))
    assert set(two) - set(one) == {"fg_1.mp4", "alpha_1.mp4"}
    meta = json.loads(two["json"])
    assert (meta["layer_format"], meta["num_foregrounds"], meta["captions"]["fg_1"]) == (
        2, 2, clips[2].captions.more_fg[0])
    assert "layer_format" not in json.loads(one["json"])


def test_a_manifest_keeps_shards_written_before_its_new_columns(tmp_path, clips):
    with ShardSink(tmp_path) as sink:
        sink.write(clips[1])
    side = next(tmp_path.glob("shard-*.parquet"))
    pq.write_table(pq.read_table(side).drop_columns(list(MANIFEST_DEFAULTS)), side)
    with ShardSink(tmp_path) as sink:
        sink.write(clips[2])
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "manifest.parquet").to_pylist()}
    assert rows[clips[1].key]["num_foregrounds"] == 1 and rows[clips[1].key]["captions_more_fg"] == "[]"
    assert rows[clips[2].key]["num_foregrounds"] == 2


# -- the synthetic world ---------------------------------------------------------------------------------------------
def test_one_object_world_is_bit_identical_to_before():
    assert [_digest(synthetic_clip(WORLD, i)) for i in range(3)] == ONE_OBJECT_DIGESTS
    assert synthetic_clip(world(1), 0).num_foregrounds == 1


@pytest.mark.parametrize("k", [2, 3])
def test_more_objects_are_drawn_behind_the_one_object_clip(k):
    """The front object, the background and their captions are the one-object clip's: extra draws come after."""
    one, many = synthetic_truth(WORLD, 1), synthetic_truth(world(k), 1)
    assert np.array_equal(many.rgb, one.rgb) and np.array_equal(many.alpha, one.alpha)
    assert np.array_equal(many.bg, one.bg)
    assert (many.captions.fg, many.captions.bg) == (one.captions.fg, one.captions.bg)


@pytest.mark.parametrize("k", [2, 3])
def test_k_object_clip_is_the_composite_of_its_layers(k):
    truth, clip = synthetic_truth(world(k), 0), synthetic_clip(world(k), 0)
    assert clip.num_foregrounds == k and clip.depth_order == tuple(range(k))
    assert np.array_equal(clip.blend, composite_layers(list(truth.rgbs), list(truth.alphas), truth.bg))
    for i in range(k):
        name = "fg" if i == 0 else f"fg_{i}"
        alpha = "alpha" if i == 0 else f"alpha_{i}"
        assert np.array_equal(clip.layer(alpha), truth.alphas[i])
        assert np.array_equal(clip.layer(name), over_grey(truth.rgbs[i], truth.alphas[i]))
        assert (truth.alphas[i] == 255).any() and np.all(clip.layer(name)[truth.alphas[i] == 0] == MID_GREY)
    assert clip.key != synthetic_clip(WORLD, 0).key and clip.source_id != synthetic_clip(WORLD, 0).source_id


def test_the_front_object_occludes_the_one_behind():
    for index in range(16):
        truth = synthetic_truth(world(2), index)
        both = (truth.alphas[0] == 255) & (truth.alphas[1] == 255)
        if both.any():
            break
    else:
        pytest.fail("no clip of the first 16 has overlapping objects to test")
    blend = synthetic_clip(world(2), index).blend
    assert np.array_equal(blend[both], truth.rgbs[0][both])
    assert not np.array_equal(blend[both], truth.rgbs[1][both])


def test_each_object_has_its_own_colour_and_caption():
    for index in range(4):
        truth = synthetic_truth(world(3), index)
        s, captions = truth.scores, truth.captions
        colours = [s["colour"], s["colour_1"], s["colour_2"]]
        shapes = [s["shape"], s["shape_1"], s["shape_2"]]
        assert len(set(colours)) == 3
        prompts = [captions.fg, *captions.more_fg]
        for prompt, colour, shape in zip(prompts, colours, shapes):
            assert prompt.startswith(f"A {colour} {shape} glides to the ") and prompt.endswith("plain backdrop.")
        named = [captions.blend.index(f"{colour} {shape}") for colour, shape in zip(colours, shapes)]
        assert named == sorted(named), "the blend caption names the objects front first"


def test_num_objects_is_a_source_option_with_a_clear_limit():
    opts = source_options(SourceSpec("synthetic_world", {"num_clips": 1, "num_objects": 2}), 0).opts
    assert opts.num_objects == 2
    opts = source_options(SourceSpec("copy_paste", {"shards": "somewhere", "num_objects": 3}), 0).opts
    assert opts.num_objects == 3
    with pytest.raises(ConfigError,
                       match=rf"sources\[0\] \(synthetic_world\): num_objects must be 1 .. {len(COLOURS)}"):
        source_options(SourceSpec("synthetic_world", {"num_objects": len(COLOURS) + 1}), 0)


def test_synthetic_layers_refuses_a_k_object_video(tmp_path):
    """compose makes one foreground per clip: a K-object video's true layers are refused, not half used."""
    video = write_synthetic_video(world(2), 0, tmp_path)
    assert video.name != write_synthetic_video(WORLD, 0, tmp_path).name
    stage = SyntheticLayersStage()
    stage.ensure_setup()
    [row] = stage.process_batch([{"key": "k", "source_id": str(video), "frame_indices": [0], "geometry": None}])
    assert "renders 2 objects" in row[FAILED]["message"]


# -- copy-paste -------------------------------------------------------------------------------------------------------
def test_copy_paste_of_two_objects_is_a_composite_clip(tmp_path):
    clips = [synthetic_clip(WORLD, i) for i in range(4)]
    source = CopyPasteSource(clips, num=6, seed=0, num_objects=2)
    assert all(len(set(fgs)) == 2 and j not in fgs for fgs, j in source.draws)
    item = source.list_inputs()[0]
    (back, front), j = source.draws[0]
    [out] = source.load(item)
    assert out.num_foregrounds == 2 and out.origin == "copy_paste" and "_o2-" in out.key
    # Pasted back to front, stored front first.
    assert np.array_equal(out.fg, clips[front].fg) and np.array_equal(out.alpha, clips[front].alpha)
    assert np.array_equal(out.layer("fg_1"), clips[back].fg) and np.array_equal(out.layer("alpha_1"), clips[back].alpha)
    assert np.array_equal(out.bg, clips[j].bg)
    assert out.captions.more_fg == (clips[back].captions.fg,) and out.captions.fg == clips[front].captions.fg
    # The stored fg is rgb*a + grey*(1-a): the exact composite of fg over what lies behind is fg + (below-grey)(1-a).
    a0, a1 = (out.layer(n).astype(np.float64)[..., None] / 255 for n in ("alpha", "alpha_1"))
    behind = out.layer("fg_1") + (out.bg.astype(np.float64) - MID_GREY) * (1 - a1)
    exact = out.fg + (behind - MID_GREY) * (1 - a0)
    assert np.abs(out.blend - exact).max() <= 0.5 + 1e-6
    truths = [synthetic_truth(WORLD, i) for i in (front, back)]
    layered = composite_layers([t.rgb for t in truths], [t.alpha for t in truths], out.bg)
    assert np.abs(out.blend.astype(int) - layered).max() <= 2
    with ShardSink(tmp_path, options=LOSSLESS) as sink:
        sink.write(out)
    [read] = list(read_clips(tmp_path))
    assert_same_clip(read, out)


def test_synthetic_clip_scaled_to_the_clip_size_is_each_layer_scaled():
    """`clip_height` x `clip_width`: every layer of the rendered clip scaled to cover and centre-cropped, exactly
    as the video path and the trainer scale the world (`resize_crop` of `cover_geometry`)."""
    from data_engine.video_io import cover_geometry, resize_crop

    world = SyntheticConfig(num_frames=3, height=64, width=64, seed=9, num_objects=2)
    full = synthetic_clip(world, 1)
    small = synthetic_clip(replace(world, clip_height=16, clip_width=24), 1)
    geometry = cover_geometry(64, 64, 16, 24)
    assert small.layer_names == full.layer_names and small.alpha.shape == (3, 16, 24)
    for name in full.layer_names:
        assert np.array_equal(small.layer(name), resize_crop(full.layer(name), geometry)), name
    assert small.captions == full.captions and small.key == full.key
