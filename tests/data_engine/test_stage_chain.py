"""The whole tiny perception chain on a synthetic clip, plain Python (no Ray): tag -> segment (soft mattes on) ->
dedup -> fg_check -> inpaint -> compose -> caption. Also the inpaint stage's paste-back and windowing."""
from __future__ import annotations

import numpy as np
import pytest

from data_engine.schema import composite
from data_engine.stages.base import StageError, is_failed
from data_engine.stages.caption import CaptionStage, cogvlm2_frames
from data_engine.stages.compose import ComposeStage
from data_engine.stages.dedup import DedupStage
from data_engine.stages.foreground_check import ForegroundCheckStage
from data_engine.stages.inpaint import InpaintStage, windows
from data_engine.stages.masks import dilate
from data_engine.stages.models import tag_list
from data_engine.stages.segment_track import SegmentTrackStage
from data_engine.stages.tag import TagStage
from data_engine.synthetic import SyntheticConfig, synthetic_clip

T, S = 6, 128


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip(SyntheticConfig(num_frames=T, height=S, width=S), 0)


@pytest.fixture(scope="module")
def chain(clip):
    stages = [
        TagStage(preset="tiny", num_keyframes=2, top_k=3),
        SegmentTrackStage(preset="tiny", sam_gap=4, box_threshold=0.0, text_threshold=0.0, max_objects=1,
                          soft_alpha=True),
        DedupStage(min_area=0.0, max_area=1.0, max_missing=1.0),
        ForegroundCheckStage(preset="tiny", num_frames=2, constrain_answer=True, on_reject="keep", dtype="float32"),
        InpaintStage(preset="tiny", dilate_px=3, window=4, overlap=2),
        ComposeStage(),
        CaptionStage(preset="tiny", max_frames=4, max_new_tokens=6, min_new_tokens=3, dtype="float32"),
    ]
    rows = [{"key": "synthetic_s0-00000", "clip_key": "synthetic_s0-00000", "frames": clip.blend, "fps": 8.0,
             "source_id": clip.source_id, "frame_range": (0, T), "scores": {}}]
    trace = {}
    for stage in stages:
        stage.ensure_setup()
        rows = stage.process_batch(rows)
        assert rows and not any(is_failed(r) for r in rows), f"{stage.name}: {rows}"
        trace[stage.name] = rows
    return trace


def test_tags_are_ranked_vocabulary_entries(chain):
    (row,) = chain["tag"]
    scores = [t["score"] for t in row["tags"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
    assert {t["tag"] for t in row["tags"]} <= set(tag_list())


def test_chain_produces_mask_bg_and_three_captions(chain, clip):
    for row in chain["caption"]:
        sample = row["clip"]
        assert sample.key == "synthetic_s0-00000-01"
        assert sample.alpha.shape == (T, S, S) and sample.bg.shape == (T, S, S, 3)
        assert set(row["captions"]) == {"fg", "bg", "blend"}
        assert all(isinstance(c, str) and c.strip() for c in row["captions"].values())
        for text in row["captions"].values():  # the tiny model emits NUL and U+FFFD; the shards get printable text
            assert text.isprintable() and text == " ".join(text.split()) and text.encode("utf-8")
        assert sample.captions.as_dict() == row["captions"]
        assert sample.scores["fg_check"]["verdict"] in ("yes", "no")
        assert np.array_equal(sample.blend, clip.blend)


def test_the_soft_alpha_reaches_the_sample_and_the_binary_mask_the_inpaint(chain):
    for seg_row, inp_row, row in zip(chain["segment"], chain["inpaint"], chain["caption"]):
        assert np.array_equal(row["clip"].alpha, seg_row["soft_alpha"])
        assert np.array_equal(inp_row["mask"], seg_row["mask"]) and set(np.unique(inp_row["mask"])) <= {0, 255}
        assert "soft_alpha" not in row

def test_inpaint_keeps_pixels_outside_the_dilated_mask(chain, clip):
    for seg_row, inp_row in zip(chain["fg_check"], chain["inpaint"]):
        hole = dilate(seg_row["mask"], 3)
        assert np.array_equal(inp_row["bg"][~hole], clip.blend[~hole])
        assert inp_row["scores"]["inpaint"]["hole_area"] == pytest.approx(hole.mean())


def test_composition_reproduces_the_blend_where_the_inpaint_is_exact(chain):
    # blend = fg * a + bg * (1 - a) holds exactly where bg equals the input (outside the hole) or a = 1.
    for row in chain["caption"]:
        s = row["clip"]
        exact = (s.bg == s.blend).all(axis=-1) | (s.alpha == 255)
        assert exact.mean() > 0.0
        assert np.array_equal(composite(s.blend, s.alpha, s.bg)[exact], s.blend[exact])


def test_synthetic_truth_satisfies_the_composition_identity(clip):
    # With the true background (a perfect inpaint) the identity holds on every pixel, up to rounding.
    rgb = np.where(clip.alpha[..., None] > 0, clip.fg, clip.blend)
    fg_rgb = np.clip((clip.fg.astype(np.float32) - 127 * (1 - clip.alpha[..., None] / 255)) /
                     np.maximum(clip.alpha[..., None] / 255, 1e-6), 0, 255)
    full = clip.alpha == 255
    assert np.abs(composite(rgb, clip.alpha, clip.bg)[full].astype(int) - clip.blend[full]).max() <= 1
    assert np.abs(composite(fg_rgb.astype(np.uint8), clip.alpha, clip.bg).astype(int) - clip.blend).max() <= 2


def test_windows_cover_the_clip_with_the_requested_overlap():
    assert windows(6, 8, 2) == [(0, 6)]
    spans = windows(200, 80, 10)
    assert spans[0][0] == 0 and spans[-1][1] == 200
    assert all(b[0] < a[1] for a, b in zip(spans, spans[1:]))  # consecutive windows overlap
    assert all(e - s == 80 for s, e in spans)


def test_inpaint_refuses_clips_too_small_for_raft():
    stage = InpaintStage(preset="tiny")
    with pytest.raises(StageError, match="at least 128 px"):
        stage.inpaint(np.zeros((2, 64, 200, 3), np.uint8), np.zeros((2, 64, 200), np.uint8))


def test_cogvlm2_frame_sampling_follows_its_demo():
    assert cogvlm2_frames(49, 8.0, "base") == np.linspace(0, 48, 24, dtype=int).tolist()
    assert cogvlm2_frames(49, 8.0, "chat") == [0, 8, 16, 24, 32, 40, 48]
    assert len(cogvlm2_frames(400, 8.0, "chat")) == 24


def test_caption_keeps_the_captions_a_layered_source_brings(clip):
    stage = CaptionStage(preset="tiny", max_frames=4, max_new_tokens=6, min_new_tokens=3, dtype="float32")
    stage.ensure_setup()
    row = {"key": clip.key, "clip": clip, "fps": clip.fps}
    assert stage.process_batch([row])[0]["clip"].captions == clip.captions
    recaption = CaptionStage(preset="tiny", max_frames=4, max_new_tokens=6, min_new_tokens=3, dtype="float32",
                             keep_existing=False)
    recaption.ensure_setup()
    new = recaption.process_batch([row])[0]["clip"].captions
    assert new != clip.captions and all(new.as_dict().values())
