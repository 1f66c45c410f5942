"""The MuLAn importer: annotations in MuLAn's released format (zlib pickles, full-frame masks, PIL mattes) built
here, rebuilt into layered image samples with known answers, run through the engine; bad and malicious
annotations are quarantined with a one-line reason and nothing in them runs."""
from __future__ import annotations

import json
import pickle
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import wids
from hostile_pickle import FileOpens, ReadsAFile, RunsACommand, zlib_bomb
from local_engine import run_locally
from PIL import Image

from data_engine.defaults import configs_dir
from data_engine.engine.config import load_config
from data_engine.shards import read_clips
from data_engine.sources.base import SourceError
from data_engine.sources.mulan import MB, MulanSource

H, W = 24, 32
PAINT = np.array([10, 200, 60], np.uint8)  # the "inpainted" colour behind the instances


def regions():
    ys, xs = np.mgrid[0:H, 0:W]
    a = (ys >= 4) & (ys < 16) & (xs >= 4) & (xs < 18)  # instance 0 (behind)
    b = (ys - 14) ** 2 + (xs - 20) ** 2 < 36  # instance 1 (in front), overlapping a
    return a, b


def annotation(base: np.ndarray, alpha_size=(H, W), empty=False) -> dict:
    """MuLAn's structure for a two-instance image whose layers are known: b in front of a, the background and
    the hidden part of a painted PAINT."""
    a, b = regions()
    m = lambda x: x[..., None].astype(np.uint8)  # noqa: E731  (H, W, 1) masks broadcast over RGB
    paint = lambda where: (where[..., None] * PAINT).astype(np.uint8)  # noqa: E731
    alpha = lambda where: Image.fromarray((where * 255).astype(np.uint8), "L").resize(alpha_size[::-1])  # noqa: E731
    return {
        "captioning": {"blip2": "model details", "llava": "model details"},
        "image": {"blip2": "a box and a ball on a field", "llava": "A detailed description."},
        "background": {"blip2": "an empty field", "llava": "A field.", "original_image_mask": m(~(a | b)),
                       "inpainted_delta": paint(a | b)},
        "instances": {
            0: {"blip2": "a box", "original_image_mask": m(a & ~b), "instance_mask": m(a),
                "inpainted_delta": paint(a & b), "instance_alpha": alpha(np.zeros_like(a) if empty else a)},
            1: {"blip2": "a ball", "original_image_mask": m(b), "instance_mask": m(b),
                "inpainted_delta": paint(np.zeros_like(b)), "instance_alpha": alpha(b)},
        },
    }


def write(path: Path, obj) -> Path:
    path.write_bytes(zlib.compress(pickle.dumps(obj, protocol=4)))
    return path


@pytest.fixture(scope="module")
def mulan(tmp_path_factory):
    root = tmp_path_factory.mktemp("mulan")
    ann, images = root / "annotations", root / "coco" / "val2017"
    ann.mkdir()
    images.mkdir(parents=True)
    base = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    for stem in ("000000000001", "000000000002", "000000000004", "000000000005", "000000000006", "000000000007",
                 "000000000008"):
        Image.fromarray(base).save(images / f"{stem}.png")
    secret = root / "outside" / "secret.png"  # a file the annotations have no business with
    secret.parent.mkdir()
    Image.fromarray(np.full((H, W), 201, np.uint8)).save(secret)
    write(ann / "000000000001.p.zl", annotation(base))
    write(ann / "000000000002.p.zl", {"background": {}, "instances": {0: RunsACommand(root / "ran")}})
    write(ann / "000000000003.p.zl", annotation(base))  # its base image is missing
    write(ann / "000000000004.p.zl", annotation(base, alpha_size=(H // 2, W // 2)))
    write(ann / "000000000005.p.zl", annotation(base, empty=True))
    (ann / "000000000006.p.zl").write_bytes(b"not zlib at all")
    reads_a_file = annotation(base)
    reads_a_file["instances"][1]["instance_alpha"] = ReadsAFile(secret)
    write(ann / "000000000007.p.zl", reads_a_file)
    (ann / "000000000008.p.zl").write_bytes(zlib_bomb(300 * MB))  # past the default cap, 256 MB
    return root, base


def test_layers_are_rebuilt_in_occlusion_order_with_known_answers(mulan):
    root, base = mulan
    source = MulanSource(root / "annotations", [str(root / "coco" / "val2017")])
    back, front = source.load(str(root / "annotations" / "000000000001.p.zl"))
    a, b = regions()
    # The front instance over everything behind it is the original image (binary mattes, consistent paint).
    assert np.array_equal(front.blend[0], base)
    assert np.array_equal(front.alpha[0] > 0, b) and np.array_equal(back.alpha[0] > 0, a)
    # The back instance's bg is the painted background; its blend shows it whole, its hidden part painted.
    assert np.array_equal(back.bg[0][a | b], np.broadcast_to(PAINT, back.bg[0][a | b].shape))
    assert np.array_equal(back.bg[0][~(a | b)], base[~(a | b)])
    assert np.array_equal(back.blend[0][a & ~b], base[a & ~b])
    assert np.array_equal(back.blend[0][a & b], np.broadcast_to(PAINT, back.blend[0][a & b].shape))
    # Behind the front instance: the back one over the background.
    assert np.array_equal(front.bg[0], back.blend[0])
    assert (back.captions.fg, front.captions.fg, front.captions.bg, front.captions.blend) == \
        ("a box", "a ball", "an empty field", "a box and a ball on a field")
    assert {c.kind for c in (back, front)} == {"image"} and back.key != front.key


def test_a_malicious_annotation_is_refused_without_running(mulan):
    root, _ = mulan
    source = MulanSource(root / "annotations", str(root / "coco" / "val2017"))
    with pytest.raises(SourceError, match=r"refused to load (posix|os)\.system"):
        source.load(str(root / "annotations" / "000000000002.p.zl"))
    assert not (root / "ran").exists()


def test_an_annotation_that_builds_an_image_from_a_path_is_refused_and_the_file_never_opened(mulan):
    root, _ = mulan
    source = MulanSource(root / "annotations", str(root / "coco" / "val2017"))
    with FileOpens() as opens, pytest.raises(SourceError, match="only be built from bytes inside the pickle") as info:
        source.load(str(root / "annotations" / "000000000007.p.zl"))
    assert "000000000007.p.zl" in str(info.value) and "\n" not in str(info.value)
    assert str(root / "outside" / "secret.png") not in opens.paths
    # Everything it opened was the annotation itself (the base image comes after the annotation is accepted).
    assert set(opens.paths) == {str(root / "annotations" / "000000000007.p.zl")}


def test_a_decompression_bomb_is_refused_after_inflating_no_more_than_the_cap(tmp_path):
    (tmp_path / "images").mkdir()
    bomb = tmp_path / "ann" / "000000000009.p.zl"
    bomb.parent.mkdir()
    bomb.write_bytes(zlib_bomb(3 * MB))
    source = MulanSource(tmp_path / "ann", str(tmp_path / "images"), max_annotation_mb=2)
    with pytest.raises(SourceError, match="inflates to more than 2 MB, refused as a decompression bomb"):
        source.load(str(bomb))
    assert bomb.stat().st_size < 16 * 1024  # what a user downloads: kilobytes


def test_a_16_bit_matte_keeps_its_soft_values(mulan, tmp_path):
    root, base = mulan
    a, b = regions()
    ramp = np.tile(np.linspace(0, 65535, W).astype(np.uint16), (H, 1)) * b  # a soft 16-bit matte inside b
    ann = annotation(base)
    ann["instances"][1]["instance_alpha"] = Image.fromarray(ramp)
    assert ann["instances"][1]["instance_alpha"].mode == "I;16"
    (tmp_path / "ann").mkdir()
    path = write(tmp_path / "ann" / "000000000001.p.zl", ann)
    _, front = MulanSource(tmp_path / "ann", str(root / "coco" / "val2017")).load(str(path))
    expected = np.rint(ramp / 65535 * 255).astype(np.uint8)
    assert np.abs(front.alpha[0].astype(int) - expected).max() <= 1
    soft = front.alpha[0][b]
    assert 0 < soft.min() and soft.max() < 255  # convert("L") clips every one of these to 255


def test_folder_messages_say_what_is_wrong(mulan, tmp_path):
    root, _ = mulan
    images = str(root / "coco" / "val2017")
    with pytest.raises(SourceError, match="no such folder"):
        MulanSource(tmp_path / "missing", images)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"no MuLAn annotations \(<stem>\.p\.zl files\)") as info:
        MulanSource(tmp_path / "empty", images).list_inputs()
    assert "video" not in str(info.value) and "extension" not in str(info.value)


@pytest.fixture(scope="module")
def engine_run(mulan, tmp_path_factory):
    root, _ = mulan
    out = tmp_path_factory.mktemp("mulan_out")
    # The shipped config, as `make dataset CONFIG=mulan ARGS="--set ..."` runs it.
    cfg = load_config(configs_dir("engine") / "mulan.yaml", [
        f"sources.0.annotations={root / 'annotations'}", f"sources.0.images=[{root / 'coco' / 'val2017'}]",
        "run.progress=false", "run.maxcount=4"], out=str(out))
    run_locally(cfg)
    return out


def test_the_engine_writes_the_samples_and_quarantines_each_bad_annotation(mulan, engine_run):
    root, base = mulan
    out = engine_run
    quarantine = {Path(r["input"]).name: r["message"] for r in pq.read_table(out / "quarantine.parquet").to_pylist()}
    assert set(quarantine) == {f"00000000000{i}.p.zl" for i in (2, 3, 4, 5, 6, 7, 8)}
    reasons = {"2": "refused to load", "3": "not found", "4": "another size than its image", "5": "empty alpha",
               "6": "not a zlib-compressed", "7": "only be built from bytes inside the pickle",
               "8": "inflates to more than 256 MB, refused as a decompression bomb"}
    for i, reason in reasons.items():
        message = quarantine[f"00000000000{i}.p.zl"]
        assert reason in message and "\n" not in message, message
    assert not (root / "ran").exists()
    # The good image's two samples, read with plain webdataset, wids and pyarrow.
    urls = sorted(str(p) for p in out.glob("shard-*.tar"))
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == 2 and all(json.loads(s["json"])["origin"] == "image" for s in samples)
    ds = wids.ShardListDataset(str(out / "index.wids.json"))
    assert len(ds) == 2
    assert pq.read_table(out / "manifest.parquet").num_rows == 2
    front = [c for c in read_clips(out) if c.captions.fg == "a ball"][0]
    assert np.abs(front.blend[0].astype(int) - base).mean() < 12  # through the codec, still the original image
