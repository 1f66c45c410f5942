"""Foreground check: the yes/no parser, the stage's decisions, and constrained decoding on a tiny Qwen2.5-VL."""
from __future__ import annotations

import numpy as np
import pytest

from data_engine.stages.base import is_failed
from data_engine.stages.foreground_check import ForegroundCheckStage, highlight, parse_yes_no, visible_frames


@pytest.mark.parametrize("text,expected", [
    ("Yes", True), ("yes.", True), ("Yes, it is a dog running.", True), ("  YES!", True), ("Yeah", True),
    ("No", False), ("no.", False), ("No, that is the sky.", False), ("Nope", False),
    ("The answer is yes.", True), ("Answer: no", False),
])
def test_parser_reads_yes_and_no(text, expected):
    assert parse_yes_no(text) is expected


@pytest.mark.parametrize("text", ["", "   ", "maybe", "yes/no", "Yes no", "It depends.", "\x15 running58", "sky"])
def test_parser_refuses_garbage(text):
    assert parse_yes_no(text) is None


def clip_row(tag: str = "dog") -> dict:
    frames = np.full((4, 16, 16, 3), 200, np.uint8)
    mask = np.zeros((4, 16, 16), np.uint8)
    mask[:, 4:10, 4:10] = 255
    return {"key": "c-00000-01", "frames": frames, "mask": mask, "tag": tag, "scores": {}}


def stage_answering(answer: str, **options) -> ForegroundCheckStage:
    stage = ForegroundCheckStage(preset="tiny", **options)
    stage.answers = lambda questions: [answer for _ in questions]  # the decision logic, without a model
    return stage


def test_yes_passes_no_drops_garbage_fails():
    (passed,) = stage_answering("Yes.").process_batch([clip_row()])
    assert passed["scores"]["fg_check"] == {"verdict": "yes", "answer": "Yes."}
    seen = clip_row("sky")
    assert stage_answering("No, it is the sky.").process_batch([seen]) == []
    assert seen["scores"]["dropped"] == ["fg_check: 'sky' is not a foreground object (answer 'No, it is the sky.')"]
    (failed,) = stage_answering("purple").process_batch([clip_row()])
    assert is_failed(failed) and "unparseable answer 'purple'" in failed["_failed"]["message"]


def test_on_reject_keep_annotates_instead_of_dropping():
    (kept,) = stage_answering("no", on_reject="keep").process_batch([clip_row()])
    assert kept["scores"]["fg_check"]["verdict"] == "no"


def test_highlight_and_frame_choice():
    row = clip_row()
    row["mask"][0] = 0
    out = highlight(row["frames"][1], row["mask"][1], 0.25)
    assert out[5, 5].tolist() == [200, 200, 200] and out[0, 0].tolist() == [50, 50, 50]
    assert visible_frames(row["mask"], 2) == [1, 3]
    assert visible_frames(np.zeros((3, 4, 4), np.uint8), 2) == []


def test_tiny_qwen_constrained_answer_is_always_parseable():
    stage = ForegroundCheckStage(preset="tiny", constrain_answer=True, num_frames=2, dtype="float32")
    stage.ensure_setup()
    (row,) = stage.process_batch([clip_row()])
    assert not is_failed(row)
    assert row["scores"]["fg_check"]["answer"] in ("Yes", "No", "yes", "no")
    # Unconstrained, random weights babble: the stage must fail the row, not read it as a yes.
    stage_free = ForegroundCheckStage(preset="tiny", num_frames=2, dtype="float32", max_new_tokens=4)
    stage_free.ensure_setup()
    answer = stage_free.ask([clip_row()["frames"][0]], "dog")
    (out,) = stage_free.process_batch([clip_row()])
    assert (parse_yes_no(answer) is None) == is_failed(out)
