"""`layers.group_objects`: a clip's objects as one K-foreground sample in depth order from their visible masks.

The depth order against the synthetic world's known order (K = 2 and 3, overlapping objects), the ground-plane
fallback, the layer_order stage, the config switch (off: the plan of today), and the grouped tiny perception chain
end to end on a local Ray."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from data_engine.defaults import configs_dir
from data_engine.engine.config import ConfigError, load_config
from data_engine.engine.runner import prepare, run, stage_names, stage_setup
from data_engine.schema import captioned_layer_names, layer_names
from data_engine.shards import read_clips
from data_engine.sources.synthetic_videos import write_synthetic_video
from data_engine.stages.depth_order import depth_order, motion
from data_engine.stages.layer_order import LayerOrderStage
from data_engine.stages.split import decode_clips
from data_engine.synthetic import SyntheticConfig, synthetic_truth
from data_engine.video_io import psnr

TINY = configs_dir("engine") / "perception_tiny.yaml"


def visible_masks(cfg: SyntheticConfig, index: int) -> list[np.ndarray]:
    """Each object's visible (modal) mask, front first: its alpha where no nearer object is opaque."""
    truth = synthetic_truth(cfg, index)
    out, nearer = [], np.zeros(truth.alpha.shape, bool)
    for alpha in truth.alphas:
        out.append((alpha >= 128) & ~nearer)
        nearer |= alpha >= 128
    return out


# Clips whose objects overlap (every pair of the K = 3 ones that occlusion orders is ordered right; on a sweep of
# 40 clips per K at 128 px, 35 of 37 overlapping K = 2 clips and 33 of 40 K = 3 ones come out right, the misses
# mostly pairs with too little relative motion that fell back to the ground-plane cue).
@pytest.mark.parametrize("num_objects, index", [(2, i) for i in range(8)] + [(3, 0), (3, 1), (3, 6), (3, 7)])
def test_depth_order_recovers_the_true_order_of_overlapping_objects(num_objects, index):
    cfg = SyntheticConfig(num_objects=num_objects, num_frames=8, height=96, width=96, seed=1)
    masks = visible_masks(cfg, index)
    amodal = [a >= 128 for a in synthetic_truth(cfg, index).alphas]
    assert (amodal[0] & amodal[1]).any()  # the front object covers some of the second
    ids = [10 * (num_objects - k) for k in range(num_objects)]  # ids not in depth order, given back to front
    found = depth_order({ids[k]: masks[k] for k in reversed(range(num_objects))})
    assert found.order == tuple(ids)
    rank = {obj: r for r, obj in enumerate(ids)}
    assert found.occlusion and all(rank[front] < rank[back] and px > 0 for front, back, px in found.occlusion)
    assert (ids[0], ids[1], found.occlusion[0][2]) in found.occlusion  # the overlapping pair: by occlusion


def test_the_occluder_crossing_a_still_object_is_in_front_though_it_uncovers_as_much_as_it_covers():
    """A disc slides right across a still square behind it: the square loses pixels to it, then gets them
    back; only the covering is occlusion (counting both would cancel out)."""
    t, h, w = 12, 64, 96
    ys, xs = np.mgrid[0:h, 0:w]
    square = np.broadcast_to((abs(ys - 32) < 14) & (abs(xs - 48) < 14), (t, h, w))
    disc = np.stack([np.hypot(ys - 34, xs - (14 + 6 * f)) < 9 for f in range(t)])
    found = depth_order({1: square & ~disc, 2: disc})  # the square reaches lower: the fallback would say square
    assert found.order == (2, 1) and [p[:2] for p in found.occlusion] == [(2, 1)]


def test_without_contact_the_object_reaching_lower_is_in_front():
    t, h, w = 6, 60, 80
    ys, xs = np.mgrid[0:h, 0:w]
    high = np.stack([np.hypot(ys - 15, xs - 15 - f) < 8 for f in range(t)])  # moving, never touching
    low = np.broadcast_to(np.hypot(ys - 42, xs - 60) < 8, (t, h, w))
    for masks in ({1: high, 2: low}, {2: low, 1: high}):
        found = depth_order(masks)
        assert found.order == (2, 1) and found.occlusion == ()


def test_motion_follows_an_object_leaving_the_frame():
    a = np.zeros((40, 40), bool)
    a[10:20, 25:38] = True
    b = np.zeros_like(a)
    b[13:23, 30:40] = True  # moved (3, 5); 3 columns left the frame
    assert motion(a, b, 8) == (3, 5)


def stripe(t: int, rows: slice) -> np.ndarray:
    m = np.zeros((t, 32, 32), np.uint8)
    m[:, rows] = 255
    return m


def test_layer_order_keeps_the_nearest_objects_each_pixel_to_its_nearest():
    t = 3
    objects = [{"obj": 1, "mask": stripe(t, slice(0, 12)), "scores": {}},   # highest: farthest
               {"obj": 2, "mask": stripe(t, slice(20, 32)), "scores": {}},  # lowest: nearest
               {"obj": 3, "mask": stripe(t, slice(8, 24)), "scores": {},
                "soft_alpha": stripe(t, slice(8, 24)) // 2}]
    row = {"key": "c-00", "mask": np.zeros((t, 32, 32), np.uint8), "objects": objects, "scores": {"x": 1}}
    stage = LayerOrderStage(group_objects=True, max_foregrounds=2)
    (out,) = stage.process_batch([row])
    assert out["depth_order"] == (2, 3) and [o["obj"] for o in out["objects"]] == [2, 3]
    assert out["scores"]["layer_order"] == {"order": [2, 3, 1], "kept": 2, "occlusion": []}
    mid = out["objects"][1]  # the middle stripe loses rows 20..23 to the nearer one, its soft alpha too
    assert np.array_equal(mid["mask"], stripe(t, slice(8, 20))) and mid["soft_alpha"][:, 20:].max() == 0
    assert np.array_equal(out["mask"], stripe(t, slice(8, 32)))  # inpaint removes the two kept, not the farthest
    plain = {"key": "c-01", "mask": stripe(t, slice(0, 4))}
    assert stage.process_batch([plain]) == [plain]


def test_off_by_default_and_the_switch_inserts_layer_order_before_inpaint(tmp_path):
    cfg = load_config(TINY, out=str(tmp_path))
    assert not cfg.layers.group_objects and "layer_order" not in stage_names(cfg)
    options = {s.name: s.opts for s in stage_setup(cfg)}
    assert options["segment"].group_objects is False  # the default: one row per object
    grouped = load_config(TINY, ["layers.group_objects=true", "layers.max_foregrounds=2"], out=str(tmp_path))
    names = stage_names(grouped)
    assert names.index("layer_order") == names.index("inpaint") - 1 > names.index("fg_check")
    stages = {s.name: s for s in stage_setup(grouped)}
    assert stages["segment"].opts.group_objects is True
    assert stages["layer_order"].given == {"group_objects": True, "max_foregrounds": 2, "min_occlusion": 0.02}
    assert stages["layer_order"].opts == stages["layer_order"].cls.Options(group_objects=True, max_foregrounds=2)
    prepare(grouped)  # the stage contract holds
    with pytest.raises(ConfigError, match="stages.segment: set layers.group_objects in the config's layers"):
        stage_setup(load_config(TINY, ["stages.segment.options.group_objects=true"], out=str(tmp_path)))
    with pytest.raises(ConfigError, match="layers.max_foregrounds must be a whole number >= 1"):
        load_config(TINY, ["layers.max_foregrounds=0"])
    model_free = load_config(configs_dir("engine") / "synthetic_videos.yaml", ["layers.group_objects=true"],
                             out=str(tmp_path / "mf"))
    with pytest.raises(ConfigError, match="stages.layer_order reads 'objects'.*add the perception stages"):
        prepare(model_free)


def test_grouped_tiny_perception_run_writes_one_k_layer_sample_per_clip(tmp_path):
    import ray

    world = SyntheticConfig(num_clips=1, num_frames=8, height=128, width=128, seed=1, num_objects=2)
    video = write_synthetic_video(world, 0, tmp_path / "videos")
    cfg = load_config(TINY, ["layers.group_objects=true", "layers.max_foregrounds=2", "run.progress=false"],
                      input=str(video), out=str(tmp_path / "out"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        run(cfg)
    finally:
        ray.shutdown()
    (clip,) = read_clips(cfg.out)
    frames, *_ = decode_clips(str(video), str(video), cfg.clip)
    order = clip.scores["layer_order"]
    assert clip.key.endswith("-00000-00") and clip.num_foregrounds == order["kept"] == 2  # the tiny chain finds 2
    assert list(clip.depth_order) == order["order"] and clip.metadata()["depth_order"] == order["order"]
    assert [o["obj"] for o in clip.scores["objects"]] == order["order"]
    assert set(clip.layer_names) == set(layer_names(2))
    assert psnr(clip.blend, frames[0]) > 30  # the blend is the clip's own frames (through the shard's codec)
    assert set(clip.captions.as_dict()) == set(captioned_layer_names(2)) and all(clip.captions.as_dict().values())
