"""The image_inpaint stage (Stable Diffusion inpainting at the tiny preset) and the image-matting importer's
image/ + alpha/ sets that need it: the fill is the pipeline's, everything outside the dilated hole is the input
exactly, the noise comes from the seed, and infra/configs/engine/image_matting.yaml runs such a set end to end
(captions from the caption stage's tiny preset), read back with plain webdataset, wids and pyarrow."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds
import wids
from local_engine import run_locally
from PIL import Image

from data_engine.cli import main
from data_engine.defaults import configs_dir
from data_engine.engine.config import ConfigError, load_config
from data_engine.engine.runner import prepare
from data_engine.schema import over_grey
from data_engine.sources.base import SourceError
from data_engine.sources.image_matting import ImageMattingOptions, ImageMattingSource
from data_engine.stages.base import FAILED, Resources
from data_engine.stages.image_inpaint import ImageInpaintStage
from data_engine.stages.masks import dilate

H, W = 40, 56  # multiples of 8: the pipeline sees the image unscaled and unpadded
GREY, OBJECT = 90, 200
CONFIG = configs_dir("engine") / "image_matting.yaml"
# The shipped config on a CPU with no weights: both model stages at their tiny preset.
TINY = [f"stages.{s}.{k}" for s in ("image_inpaint", "caption")
        for k in ("num_gpus=0", "options.preset=tiny", "options.dtype=float32")] + [
    "stages.image_inpaint.options.steps=2", "stages.caption.options.max_new_tokens=8",
    "stages.caption.options.min_new_tokens=4", "run.progress=false"]


def photo(h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray]:
    """A constant grey photo with a bright box, and the box's matte (soft on its top edge)."""
    image = np.full((h, w, 3), GREY, np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    image[h // 4:h // 2, w // 4:w // 2] = OBJECT
    alpha[h // 4:h // 2, w // 4:w // 2] = 255
    alpha[h // 4 - 1, w // 4:w // 2] = 60  # a soft edge: carries object colour, so it is inpainted too
    return image, alpha


def make_stage(**options) -> ImageInpaintStage:
    stage = ImageInpaintStage(Resources(num_gpus=0), **{"preset": "tiny", "dtype": "float32", "steps": 2,
                                                        "dilate_px": 2, **options})
    stage.ensure_setup()
    return stage


@pytest.fixture(scope="module")
def stage() -> ImageInpaintStage:
    return make_stage()


def test_outside_the_dilated_hole_is_the_input_and_inside_is_filled(stage):
    image, alpha = photo()
    bg, hole = stage.inpaint(image, alpha)
    assert bg.dtype == np.uint8 and bg.shape == image.shape
    assert np.array_equal(hole, dilate((alpha > 0)[None], 2)[0]) and hole[H // 4 - 1, W // 4]  # the soft edge
    assert np.array_equal(bg[~hole], image[~hole])
    assert (bg[hole] != image[hole]).any(axis=-1).mean() > 0.5


def test_the_fill_is_the_pipelines_output_for_that_seed(stage):
    image, alpha = photo()
    bg, hole = stage.inpaint(image, alpha)
    out = stage.pipe(prompt=stage.opts.prompt, negative_prompt=stage.opts.negative_prompt, image=Image.fromarray(image),
                     mask_image=Image.fromarray(hole.astype(np.uint8) * 255), height=H, width=W, num_inference_steps=2,
                     guidance_scale=stage.opts.guidance_scale, generator=torch.Generator().manual_seed(0),
                     output_type="np").images[0]
    assert np.array_equal(bg[hole], np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)[hole])


def test_the_noise_comes_from_the_seed(stage):
    image, alpha = photo()
    first, hole = stage.inpaint(image, alpha)
    assert np.array_equal(stage.inpaint(image, alpha)[0], first)
    other = make_stage(seed=1).inpaint(image, alpha)[0]
    assert not np.array_equal(other[hole], first[hole]) and np.array_equal(other[~hole], first[~hole])


def test_a_large_odd_sized_image_is_scaled_padded_and_pasted_back(stage):
    image, alpha = photo(45, 61)
    small = make_stage(max_side=24)
    bg, hole = small.inpaint(image, alpha)
    assert bg.shape == (45, 61, 3) and np.array_equal(bg[~hole], image[~hole])


def test_a_row_becomes_a_finished_image_sample(stage):
    image, alpha = photo()
    row = {"_input": "x", "key": "matting_a-00000-00", "source_id": "a.png", "frames": image[None],
           "mask": alpha[None], "fps": 1.0, "captions": {"fg": "a box", "bg": "", "blend": ""},
           "scores": {"background": "inpainted"}}
    (out,) = stage.process_batch([row])
    clip = out["clip"]
    assert "frames" not in out and "mask" not in out and out["_input"] == "x"
    assert (clip.kind, clip.origin, clip.key, clip.captions.fg) == ("image", "image", row["key"], "a box")
    assert np.array_equal(clip.alpha, alpha[None]) and np.array_equal(clip.blend, image[None])
    assert np.array_equal(clip.fg, over_grey(image[None], alpha[None]))
    assert clip.scores["background"] == "inpainted" and clip.scores["image_inpaint"]["hole_area"] > 0
    hole = dilate((alpha > 0)[None], 2)
    assert np.array_equal(clip.bg[~hole], image[None][~hole])


def test_a_clip_is_refused_in_one_line(stage):
    image, alpha = photo()
    (out,) = stage.process_batch([{"key": "k", "frames": np.stack([image, image]), "mask": np.stack([alpha, alpha])}])
    message = out[FAILED]["message"]
    assert "one uint8 image [1, H, W, 3]" in message and "[2, 40, 56, 3]" in message and "\n" not in message


# ---------------------------------------------------------------- the importer and the engine

def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """image/ + alpha/ only (no bg/): two good photos, one whose matte is another size."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    good = {}
    for name in ("p0", "p1"):
        image, alpha = photo()
        image = np.clip(image.astype(int) + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
        good[name] = (image, alpha)
        save(root / "image" / f"{name}.png", image)
        save(root / "alpha" / f"{name}.png", alpha)
    save(root / "image" / "bad.png", photo()[0])
    save(root / "alpha" / "bad.png", photo()[1][:10])
    (root / "captions.json").write_text(json.dumps({"p0": {"fg": "a box", "bg": "grey", "blend": "a box on grey"}}))
    return root, good


def test_photos_without_a_background_leave_the_source_unfinished(photos):
    root, (image, alpha) = photos[0], photos[1]["p0"]
    source = ImageMattingSource(ImageMattingOptions(root=str(root)))
    assert source.provides(source.list_inputs()) == source.unfinished
    (row,) = source.rows("p0")
    assert np.array_equal(row["frames"], image[None]) and np.array_equal(row["mask"], alpha[None])
    assert row["captions"]["fg"] == "a box" and "clip" not in row
    with pytest.raises(SourceError, match="needs the image_inpaint stage"):
        source.load("p0")


def test_a_photo_set_without_the_inpaint_stage_is_a_config_error(photos, tmp_path):
    cfg = load_config(CONFIG, [f"sources.0.root={photos[0]}", *TINY, "stages=[encode]"], out=str(tmp_path))
    with pytest.raises(ConfigError, match=r"stages\.encode reads 'clip'.*image_inpaint"):
        prepare(cfg)


def test_the_full_preset_names_its_missing_weights_before_starting(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERFLOW_WEIGHTS", str(tmp_path / "empty"))
    cfg = load_config(CONFIG, [f"sources.0.root={photos[0]}", "stages.caption.options.preset=tiny"],
                      out=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="stable-diffusion-2-inpainting \\(for image_inpaint\\)") as info:
        prepare(cfg)
    assert "layerflow weights download stable-diffusion-2-inpainting" in str(info.value)


def test_a_set_with_its_backgrounds_and_captions_needs_no_model(tmp_path, monkeypatch, capsys):
    """fg/ + alpha/ + bg/ with every caption in captions.json: nothing to inpaint or caption, so the shipped config
    (full presets, GPU stages) plans on a CPU with no weights; with a caption missing, only the caption model is
    needed."""
    monkeypatch.setenv("LAYERFLOW_WEIGHTS", str(tmp_path / "empty"))
    root, out = tmp_path / "set", tmp_path / "out"
    image, alpha = photo()
    for folder, array in (("fg", image), ("alpha", alpha), ("bg", np.full_like(image, GREY))):
        save(root / folder / "p0.png", array)
    (root / "captions.json").write_text(json.dumps({"p0": {"fg": "a box", "bg": "grey", "blend": "a box on grey"}}))
    assert main(["dataset", "--config", "image_matting", "--input", str(root), "--out", str(out), "--dry-run"]) == 0
    assert "left out: image_inpaint, caption (no input gives them work" in " ".join(capsys.readouterr().err.split())
    plan = prepare(load_config(CONFIG, input=str(root), out=str(out)))
    assert [name for name, _ in plan.resources] == ["source", "encode"] and plan.idle == ["image_inpaint", "caption"]
    (root / "captions.json").write_text(json.dumps({"p0": {"fg": "a box", "bg": "", "blend": "a box on grey"}}))
    with pytest.raises(ConfigError, match=r"for 1 model\(s\): qwen2.5-vl-7b-instruct \(for caption\);"):
        prepare(load_config(CONFIG, input=str(root), out=str(out)))


@pytest.fixture(scope="module")
def engine_run(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("image_matting_out")
    # The shipped config, as `make dataset CONFIG=image_matting ARGS="--set ..."` runs it, at the tiny presets.
    cfg = load_config(CONFIG, [f"sources.0.root={photos[0]}", *TINY], out=str(out))
    summary = run_locally(cfg)
    return out, summary


def test_the_engine_inpaints_captions_and_writes_each_photo(photos, engine_run):
    _, good = photos
    out, summary = engine_run
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert [(r["input"].rsplit(":", 1)[-1], r["stage"]) for r in quarantine] == [("bad", "source")]
    assert "another size than its image" in quarantine[0]["message"]
    samples = list(wds.WebDataset(sorted(str(p) for p in out.glob("shard-*.tar")), shardshuffle=False))
    assert len(samples) == 2 == len(wids.ShardListDataset(str(out / "index.wids.json")))
    assert pq.read_table(out / "manifest.parquet").num_rows == 2
    for sample in samples:
        meta = json.loads(sample["json"])
        image, alpha = good[meta["source_id"].rsplit("/", 1)[-1].split(".")[0]]
        layers = {k: np.asarray(Image.open(io.BytesIO(sample[f"{k}.png"]))) for k in ("fg", "alpha", "bg", "blend")}
        hole = dilate((alpha > 0)[None], 8)[0]  # the config's dilate_px
        assert (meta["kind"], meta["origin"]) == ("image", "image")
        assert np.array_equal(layers["blend"], image) and np.array_equal(layers["alpha"], alpha)
        assert np.array_equal(layers["fg"], over_grey(image, alpha))
        assert np.array_equal(layers["bg"][~hole], image[~hole]) and not np.array_equal(layers["bg"], image)
        assert all(meta["captions"].values()) and meta["scores"]["image_inpaint"]["steps"] == 2
    by_name = {json.loads(s["json"])["source_id"].rsplit("/", 1)[-1]: json.loads(s["json"]) for s in samples}
    assert by_name["p0.png"]["captions"]["fg"] == "a box"  # the set's own captions are kept
    assert by_name["p1.png"]["scores"]["caption"]["backend"] == "qwen2.5-vl"
    rate = summary.stats["engine"]["processing_clips_per_s"]
    print(f"image_matting + image_inpaint (tiny) through the engine: {rate} samples/s, wall {summary.wall_s:.1f} s")
