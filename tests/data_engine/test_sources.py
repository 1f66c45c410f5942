import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_engine.defaults import configs_dir
from data_engine.engine.config import ConfigError, load_config
from data_engine.engine.inputs import list_sources, typed_sources
from data_engine.schema import MID_GREY, composite, composite_premultiplied
from data_engine.shards import ShardSink, read_clips
from data_engine.sources.base import Failure, SourceError
from data_engine.sources.copy_paste import CopyPasteSource, paste
from data_engine.sources.layered_images import LayeredImageSource
from data_engine.sources.official import OfficialSampleSource
from data_engine.sources.synthetic_world import SyntheticWorldSource
from data_engine.synthetic import SyntheticConfig, synthetic_clip
from data_engine.video_io import encode_png, psnr

SMALL = SyntheticConfig(num_clips=4, num_frames=6, height=48, width=64, seed=11)


def write_or_quarantine(source, sink: ShardSink) -> tuple[int, int]:
    """What the engine's source stage does with a source: clips to the sink, Failures to quarantine."""
    written = quarantined = 0
    for item in source.iter_clips():
        if isinstance(item, Failure):
            sink.quarantine(item.input, item.stage, item.error)
            quarantined += 1
        else:
            written += int(sink.write(item))
    return written, quarantined


def _residual(clip) -> float:
    """Mean |blend - (fg*a + bg*(1-a))| in 0..1 units."""
    a = clip.alpha.astype(np.float64)[..., None] / 255.0
    model = clip.fg.astype(np.float64) * a + clip.bg.astype(np.float64) * (1 - a)
    return float(np.abs(clip.blend.astype(np.float64) - model).mean() / 255.0)


def test_composite_rounds_every_input_exactly():
    """All 256^3 (fg, bg, alpha) triples against the real-valued formula rounded to nearest (no ties exist)."""
    values = np.arange(256, dtype=np.uint8)
    fg, bg, alpha = (g.reshape(256, 256, 256, 1) for g in np.meshgrid(values, values, values, indexing="ij"))
    got = composite(fg, alpha[..., 0], bg)
    exact = (fg.astype(np.int64) * alpha + bg.astype(np.int64) * (255 - alpha.astype(np.int64))) / 255
    assert np.array_equal(got, np.rint(exact).astype(np.uint8))
    assert np.array_equal(composite(fg[:2], alpha[:2, ..., 0], MID_GREY), composite(fg[:2], alpha[:2, ..., 0],
                                                                                       np.full_like(fg[:2], MID_GREY)))
    with pytest.raises(ValueError, match="alpha must be uint8"):
        composite(fg[:1], alpha[:1, ..., 0] / 255.0, bg[:1])


def test_synthetic_is_deterministic_soft_and_consistent():
    a, b = synthetic_clip(SMALL, 2), synthetic_clip(SMALL, 2)
    assert all(np.array_equal(a.layer(n), b.layer(n)) for n in ("fg", "alpha", "bg", "blend"))
    assert not np.array_equal(a.blend, synthetic_clip(SMALL, 3).blend)
    soft = (a.alpha > 0) & (a.alpha < 255)
    assert soft.any() and (a.alpha == 255).any() and (a.alpha == 0).any()
    assert np.all(a.fg[a.alpha == 0] == MID_GREY)
    assert not np.array_equal(a.bg[0], a.bg[-1]), "the background must move"
    assert not np.array_equal(a.alpha[0], a.alpha[-1]), "the object must move"
    assert _residual(a) < 1.0 / 255
    assert a.captions.fg and a.captions.bg and a.captions.blend


@pytest.mark.parametrize("seq", ["dog", "rhino", "lucia"])
def test_davis_import_round_trip_keeps_soft_alpha(official_samples, tmp_path, seq):
    source = OfficialSampleSource(official_samples)
    item = next(i for i in source.list_inputs() if f"/{seq}/" in i + "/")
    [clip] = source.load(item)
    assert clip.captions.fg and clip.captions.bg and clip.captions.blend
    with ShardSink(tmp_path) as sink:
        sink.write(clip)
    [back] = list(read_clips(tmp_path))
    assert back.metadata() == clip.metadata()
    assert back.num_frames == 16 and (back.height, back.width) == (480, 720)
    assert _residual(back) <= 6 / 255
    soft = (back.alpha > 0) & (back.alpha < 255)
    assert soft.mean() > 0.001, "fractional alpha values must survive"
    assert np.abs(back.alpha.astype(int) - clip.alpha).max() <= 2
    for name in ("fg", "bg", "blend"):
        assert psnr(back.layer(name), clip.layer(name)) >= 40.0


def test_youtube_vos_layout_is_imported(official_samples):
    source = OfficialSampleSource(official_samples)
    item = next(i for i in source.list_inputs() if i.endswith("SUV"))
    [clip] = source.load(item)
    assert (clip.height, clip.width) == (432, 768)
    assert clip.captions.blend.startswith("The video showcases the SUV")


def test_corrupt_and_empty_frames_are_quarantined_and_run_finishes(official_samples, tmp_path):
    root = tmp_path / "samples" / "DAVIS" / "480p"
    src = official_samples / "DAVIS" / "480p"
    for seq in ("dog", "rhino", "lucia"):
        shutil.copytree(src / seq, root / seq)
    for meta in src.glob("meta*.json"):
        shutil.copy(meta, root)
    (root / "dog" / "mask" / "0003.png").write_bytes(b"")
    (root / "rhino" / "bg" / "0005.png").write_bytes(b"\x89PNG garbage")
    out = tmp_path / "out"
    with ShardSink(out) as sink:
        assert write_or_quarantine(OfficialSampleSource(tmp_path / "samples"), sink) == (1, 2)
    rows = {r["input"].split("/")[-2]: r for r in pq.read_table(out / "quarantine.parquet").to_pylist()}
    assert set(rows) == {"dog", "rhino"}
    assert "0003.png" in rows["dog"]["message"] and "zero-byte" in rows["dog"]["message"]
    assert "0005.png" in rows["rhino"]["message"]
    assert [c.key for c in read_clips(out)] == ["official_lucia-00000-00"]


def test_copy_paste_composites_fg_over_other_background():
    clips = list(SyntheticWorldSource(SMALL).iter_clips())
    out = paste(clips[0], clips[1], "cp-00000-00")
    rgb_times_a = clips[0].fg.astype(np.float64) - MID_GREY * (1 - clips[0].alpha[..., None] / 255.0)
    a = clips[0].alpha[..., None] / 255.0
    expected = rgb_times_a + clips[1].bg * (1 - a)
    assert np.abs(out.blend.astype(np.float64) - expected).max() <= 0.5 + 1e-9
    assert np.array_equal(out.bg, clips[1].bg) and np.array_equal(out.alpha, clips[0].alpha)
    assert out.origin == "copy_paste" and out.captions.bg == clips[1].captions.bg
    draws = CopyPasteSource(clips, num=20, seed=0).draws
    assert all(len(fgs) == 1 and j not in fgs for fgs, j in draws)
    assert draws == CopyPasteSource(clips, num=20, seed=0).draws


def test_layered_images_become_image_samples(tmp_path):
    rng = np.random.default_rng(0)
    item = tmp_path / "imgs" / "cat"
    item.mkdir(parents=True)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    bg = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    (item / "fg.png").write_bytes(encode_png(rgb))
    (item / "alpha.png").write_bytes(encode_png(alpha))
    (item / "bg.png").write_bytes(encode_png(bg))
    (item / "captions.json").write_text(json.dumps({"fg": "a cat", "bg": "a sofa", "blend": "a cat on a sofa"}))
    bad = tmp_path / "imgs" / "broken"
    bad.mkdir()
    (bad / "fg.png").write_bytes(b"")
    (bad / "bg.png").write_bytes(encode_png(bg))
    out = tmp_path / "out"
    with ShardSink(out) as sink:
        assert write_or_quarantine(LayeredImageSource(tmp_path / "imgs"), sink) == (1, 1)
    [clip] = list(read_clips(out))
    assert clip.kind == "image" and clip.num_frames == 1
    assert np.array_equal(clip.alpha[0], alpha)
    assert np.array_equal(clip.blend, composite(rgb[None], alpha[None], bg[None]))
    assert clip.captions.blend == "a cat on a sofa"


@pytest.mark.parametrize("config", ["image_matting", "video_matting", "layered_images", "mulan"])
def test_a_missing_input_folder_is_reported_as_missing(tmp_path, config):
    """`layerflow dataset --config NAME --input PATH` with no folder at PATH: one line saying so, not a complaint
    about the layout a folder there should have had."""
    missing = tmp_path / "not_here"
    cfg = load_config(configs_dir("engine") / f"{config}.yaml", input=str(missing), out=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"not_here: no such folder") as info:
        list_sources(typed_sources(cfg), cfg.work_dir)
    assert "\n" not in str(info.value) and "expected" not in str(info.value)
    with pytest.raises(SourceError, match="no such folder"):
        OfficialSampleSource(missing)


def test_a_premultiplied_composite_equals_the_straight_one_within_1():
    """composite_premultiplied(round(fg * a), a, bg) is composite(fg, a, bg) within 1 for every fg, a and bg level
    (the premultiplied colour was rounded once already)."""
    fg, a, bg = np.meshgrid(np.arange(256), np.arange(256), np.arange(0, 256, 15), indexing="ij")
    fg, a, bg = fg.astype(np.uint8), a.astype(np.uint8), bg.astype(np.uint8)
    premultiplied = np.rint(fg.astype(float) * a / 255).astype(np.uint8)
    straight = composite(fg[..., None], a, bg[..., None])
    assert np.abs(composite_premultiplied(premultiplied[..., None], a, bg[..., None]).astype(int)
                  - straight).max() <= 1
