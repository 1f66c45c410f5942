"""The image-matting importer: fg/ + alpha/ (+ bg/ or backgrounds to paste over) and image/ + alpha/ + bg/ sets
built here; known answers for the layers, and a one-line reason for each bad item, through the engine."""
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
from data_engine.schema import composite, over_grey
from data_engine.sources.base import SourceError
from data_engine.sources.image_matting import ImageMattingOptions, ImageMattingSource

H, W = 20, 28


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("matting")
    rng = np.random.default_rng(0)
    rgb = lambda: rng.integers(0, 256, (H, W, 3), dtype=np.uint8)  # noqa: E731
    alpha = np.zeros((H, W), np.uint8)
    alpha[5:15, 6:20] = 255
    alpha[4, 6:20] = 128  # a soft edge, kept
    layers = {"good": (rgb(), alpha, rgb())}
    for name, (fg, a, bg) in layers.items():
        save(root / "own" / "fg" / f"{name}.png", fg)
        save(root / "own" / "alpha" / f"{name}.png", a)
        save(root / "own" / "bg" / f"{name}.png", bg)
    save(root / "own" / "fg" / "small_alpha.png", rgb())
    save(root / "own" / "alpha" / "small_alpha.png", alpha[:10, :10])
    save(root / "own" / "bg" / "small_alpha.png", rgb())
    save(root / "own" / "fg" / "empty.png", rgb())
    save(root / "own" / "alpha" / "empty.png", np.zeros((H, W), np.uint8))
    save(root / "own" / "bg" / "empty.png", rgb())
    save(root / "own" / "fg" / "no_bg.png", rgb())
    save(root / "own" / "alpha" / "no_bg.png", alpha)
    (root / "own" / "captions.json").write_text(json.dumps({"good": {"fg": "a box", "bg": "noise", "blend": "both"}}))
    for i in range(3):
        save(root / "paste" / "fg" / f"p{i}.png", rgb())
        save(root / "paste" / "alpha" / f"p{i}.png", alpha)
        save(root / "backgrounds" / f"b{i}.jpg", rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    return root, layers


def test_an_image_with_its_own_background_keeps_every_layer(sets):
    root, layers = sets
    (clip,) = ImageMattingSource(ImageMattingOptions(root=str(root / "own"))).load("good")
    fg, alpha, bg = layers["good"]
    assert np.array_equal(clip.alpha[0], alpha) and np.array_equal(clip.bg[0], bg)
    assert np.array_equal(clip.fg[0], over_grey(fg, alpha)) and np.array_equal(clip.blend[0], composite(fg, alpha, bg))
    assert clip.captions.fg == "a box" and clip.kind == "image" and clip.origin == "image"


def test_foregrounds_are_pasted_over_seeded_backgrounds(sets):
    root, _ = sets
    src = ImageMattingSource(ImageMattingOptions(root=str(root / "paste"), backgrounds=str(root / "backgrounds")))
    clips = [src.load(i)[0] for i in src.list_inputs()]
    again = [src.load(i)[0] for i in src.list_inputs()]
    assert all(np.array_equal(a.bg, b.bg) for a, b in zip(clips, again))
    assert all(c.bg.shape == (1, H, W, 3) for c in clips)
    assert all(c.scores["background"].startswith(str(root / "backgrounds")) for c in clips)


@pytest.mark.parametrize("name, reason", [("small_alpha", "another size than its image"),
                                          ("empty", "empty alpha"), ("no_bg", "no background")])
def test_bad_items_name_the_file_and_the_reason(sets, name, reason):
    root, _ = sets
    with pytest.raises(SourceError, match=reason) as info:
        ImageMattingSource(ImageMattingOptions(root=str(root / "own"))).load(name)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_through_the_engine(sets, tmp_path):
    root, _ = sets
    cfg = parse_config({"run": {"out": str(tmp_path / "out"), "maxcount": 4, "progress": False},
                        "clip": {"num_frames": 1, "fps": 1, "height": H, "width": W},
                        "sources": [{"type": "image_matting", "root": str(root / "own")}], "stages": ["encode"]})
    run_locally(cfg)
    out = tmp_path / "out"
    samples = list(wds.WebDataset(sorted(str(p) for p in out.glob("shard-*.tar")), shardshuffle=False))
    assert len(samples) == 1 and json.loads(samples[0]["json"])["captions"]["fg"] == "a box"
    quarantine = {r["input"].rsplit(":", 1)[-1]: r["message"]
                  for r in pq.read_table(out / "quarantine.parquet").to_pylist()}
    assert set(quarantine) == {"small_alpha", "empty", "no_bg"}
