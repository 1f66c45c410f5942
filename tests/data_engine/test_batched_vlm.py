"""caption and fg_check batch their questions across rows and layers (left padding, one `generate` per batch):
under greedy decoding, on the tiny Qwen2.5-VL and Qwen3-VL, every answer equals the one a batch of one gives."""
from __future__ import annotations

import re

import numpy as np
import pytest

from data_engine.stages.base import is_failed
from data_engine.stages.caption import CaptionStage
from data_engine.stages.foreground_check import ForegroundCheckStage
from data_engine.stages.models import QWEN_VL, build_qwen_vl
from data_engine.synthetic import SyntheticConfig, synthetic_clip

TINY = dict(preset="tiny", dtype="float32")
BACKENDS = pytest.mark.parametrize("backend", list(QWEN_VL))


def recorded_generate(stage) -> list[dict]:
    """Wraps the stage's model.generate; returns the list of the inputs of each call."""
    calls: list[dict] = []
    generate = stage.model.generate

    def wrapped(**inputs):
        calls.append(inputs)
        return generate(**inputs)

    stage.model.generate = wrapped
    return calls


def batch_sizes(calls: list[dict]) -> list[int]:
    return [inputs["input_ids"].shape[0] for inputs in calls]


def clip_rows() -> list[dict]:
    """Two clips of different sizes and lengths, so the prompts differ in image tokens as well as text."""
    rows = []
    for i, (frames, h, w) in enumerate([(6, 128, 128), (5, 96, 160)]):
        clip = synthetic_clip(SyntheticConfig(num_frames=frames, height=h, width=w), i)
        rows.append({"key": f"c-{i:05d}", "frames": clip.blend, "mask": clip.alpha, "bg": clip.bg, "fps": 8.0,
                     "tag": ("dog", "a red ball")[i], "scores": {}})
    return rows


@pytest.fixture(scope="module", params=list(QWEN_VL))
def captioners(request):
    out = {}
    for size in (1, 4):
        stage = CaptionStage(backend=request.param, max_frames=4, max_new_tokens=6, min_new_tokens=3,
                             generate_batch=size, **TINY)
        stage.ensure_setup()
        out[size] = stage
    return out


def test_batched_captions_equal_unbatched(captioners):
    calls = recorded_generate(captioners[4])
    batched = captioners[4].process_batch(clip_rows())
    single = captioners[1].process_batch(clip_rows())
    assert batch_sizes(calls) == [4, 2]  # 2 clips x 3 layers in two generate calls
    assert not any(is_failed(r) for r in batched + single)
    assert [r["captions"] for r in batched] == [r["captions"] for r in single]
    texts = [t for r in batched for t in r["captions"].values()]
    assert all(texts) and len(set(texts)) > 1  # real generations, not one string repeated


@BACKENDS
def test_fg_check_batched_answers_equal_unbatched(backend):
    stages = {}
    for size in (1, 3):
        stages[size] = ForegroundCheckStage(backend=backend, num_frames=2, max_new_tokens=4, generate_batch=size,
                                            **TINY)
        stages[size].ensure_setup()
    rows = clip_rows() * 2
    for i, row in enumerate(rows):
        row["tag"] = ["dog", "a red ball", "sky", "the person on the left"][i]
    calls = recorded_generate(stages[3])
    batched = stages[3].answers([stages[3].question(r["frames"], r) for r in rows])
    single = [stages[1].ask(*stages[1].question(r["frames"], r)) for r in rows]
    assert batch_sizes(calls) == [3, 1]
    assert batched == single and all(batched)


@BACKENDS
def test_fg_check_constrained_batch_is_parseable_and_keeps_row_order(backend):
    options = dict(backend=backend, num_frames=2, constrain_answer=True, on_reject="keep", **TINY)
    stage = ForegroundCheckStage(generate_batch=4, **options)
    stage.ensure_setup()
    one = ForegroundCheckStage(generate_batch=1, **options)
    one.ensure_setup()
    rows = clip_rows()
    empty = dict(rows[0], key="c-empty", mask=np.zeros_like(rows[0]["mask"]))
    out = stage.process_batch([rows[0], empty, rows[1]])
    assert [r["key"] for r in out] == ["c-00000", "c-empty", "c-00001"]
    assert is_failed(out[1]) and "mask is empty" in out[1]["_failed"]["message"]
    expected = one.process_batch(clip_rows())
    assert [out[0]["scores"]["fg_check"], out[2]["scores"]["fg_check"]] == [r["scores"]["fg_check"] for r in expected]
    answers = {out[0]["scores"]["fg_check"]["answer"], out[2]["scores"]["fg_check"]["answer"]}
    assert answers <= {"Yes", "No", "yes", "no"}


def test_generate_batch_must_be_positive():
    with pytest.raises(ValueError, match="generate_batch must be >= 1"):
        CaptionStage(generate_batch=0, **TINY)
    with pytest.raises(ValueError, match="generate_batch must be >= 1"):
        ForegroundCheckStage(generate_batch=0, **TINY)


def test_an_unknown_backend_is_one_line_listing_the_valid_ones():
    qwens = "'qwen2.5-vl', 'qwen3-vl'"
    for make, valid in ((CaptionStage, f"({qwens}, 'cogvlm2')"), (ForegroundCheckStage, f"({qwens})")):
        with pytest.raises(ValueError) as err:
            make(backend="qwen4-vl", **TINY)
        message = str(err.value)
        assert message.endswith(f"backend must be one of {valid}, got 'qwen4-vl'") and "\n" not in message
    with pytest.raises(ValueError) as err:
        build_qwen_vl("tiny", "cogvlm2")
    assert str(err.value) == f"unknown Qwen-VL backend 'cogvlm2'; choose one of ({qwens})"


def test_qwen3_vl_reads_the_clip_frame_times_in_its_prompt():
    """Qwen3-VL writes each frame pair's time into the prompt: the clip's, from its fps and the sampled frames."""
    stage = CaptionStage(backend="qwen3-vl", max_frames=4, max_new_tokens=2, **TINY)
    stage.ensure_setup()
    calls = recorded_generate(stage)
    row = dict(clip_rows()[0], fps=4.0)  # 6 frames: 0, 2, 3 and 5 are sampled, paired as (0, 2) and (3, 5)
    stage.process_batch([row])
    prompts = [p for inputs in calls for p in stage.processor.batch_decode(inputs["input_ids"])]
    assert [re.findall(r"<[\d.]+ seconds>", p) for p in prompts] == [["<0.2 seconds>", "<1.0 seconds>"]] * 3
