"""The whole loop learns (issue 14): engine shards of the tiny world -> stages 1, 2, 3 -> `LayerFlowPipeline`
decomposes held-out clips better than the trivial answer (alpha 0, background = the blend).

Every link is the one a user runs: `layerflow dataset`, `layerflow precompute`, `layerflow train --stage 1|2|3
--tiny` from the shipped world VAE, the pipeline with the Motion LoRA off. A mismatch between the trainer and the
pipeline (the order of the layers in the sequence, where the clean condition latents sit) makes the pipeline ask
the model something it never learned: the last two tests apply each such mutation to the pipeline alone and check
that the first test's assertion then fails. (The model does not learn to read its prompts at this budget, so a
swap of the prompt slots goes unseen here.) A smaller budget than `benchmarks/toyworld.py` (32 videos,
decomposition only, 600 / 10 / 40 steps at batch 8): about 2.5 minutes on 2 cores.
"""
from __future__ import annotations

from dataclasses import replace
from unittest import mock

import numpy as np
import pytest
import torch

import model.pipeline
from evaluation.metrics import toyworld as tw
from layerflow.toyworld import Recipe, heldout_clips, sample_tasks, train
from model.layout import SequenceLayout
from model.pipeline import LayerFlowPipeline

RECIPE = replace(Recipe(), videos=32, stage_steps=(600, 10, 40), tasks="{decompose: 1}")
HELDOUT_SEED, CLIPS = 1000, 8
# The target: the decomposed background inside the object's region, where the trivial answer (bg = the
# blend) shows the object, at least 6 dB better than that answer; and a foreground on the object no more than 2 dB
# worse than the trivial answer's mid-grey (this budget learns backgrounds, not yet the objects' colours).
BG_MARGIN_DB, FG_SLACK_DB = 6.0, 2.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    run = train(RECIPE, tmp_path_factory.mktemp("toyworld"), threads=1, log=lambda line: None)
    return run / "train" / "stage3" / "final"


@pytest.fixture(scope="module")
def clips():
    return heldout_clips(RECIPE, HELDOUT_SEED, CLIPS)


def _psnr(outputs, clips) -> dict[str, float]:
    rows = [tw.decomposition_scores(o, c) for o, c in zip(outputs, clips)]
    return {k: float(np.nanmean([r[k] for r in rows])) for k in ("bg_psnr_object", "fg_psnr_object")}


def decompose(pipe: LayerFlowPipeline, clips) -> dict[str, float]:
    """The decomposed bg's PSNR inside the object's region and the fg's on the object, mean over the clips."""
    pipe.set_progress_bar_config(disable=True)
    outputs = sample_tasks(pipe, clips, RECIPE, steps=8, guidance=6.0, seed=HELDOUT_SEED, tasks=("decompose",))
    return _psnr(outputs["decompose"], clips)


def learned_enough(scores: dict[str, float], clips) -> tuple[bool, str]:
    trivial = _psnr([tw.trivial_decomposition(c["blend"]) for c in clips], clips)
    bg, fg = scores["bg_psnr_object"], scores["fg_psnr_object"]
    ok = bg >= trivial["bg_psnr_object"] + BG_MARGIN_DB and fg >= trivial["fg_psnr_object"] - FG_SLACK_DB
    return ok, (f"decomposed bg PSNR in the object's region {bg:.1f} dB (trivial {trivial['bg_psnr_object']:.1f}), "
                f"fg on the object {fg:.1f} dB (trivial {trivial['fg_psnr_object']:.1f})")


def test_decomposition_beats_the_trivial_baseline(trained, clips):
    ok, message = learned_enough(decompose(LayerFlowPipeline.from_pretrained(trained), clips), clips)
    assert ok, message


class BgFirstLayout(SequenceLayout):
    """A pipeline-side layer order that differs from the trainer's: bg where fg is, fg where bg is."""

    ORDER = ("bg", "alpha", "fg", "blend")

    def frame_slice(self, layer: str) -> slice:
        start = self.ORDER.index(layer) * self.frames_per_layer + self.duplicate
        return slice(start, start + self.frames_per_layer)

    def latent_indices(self, layer: str) -> list[int]:
        start = self.ORDER.index(layer) * self.latents_per_layer + self.duplicate
        return (list(range(self.duplicate)) if layer == self.ORDER[0] else []) + \
            list(range(start, start + self.latents_per_layer))


def test_a_pipeline_with_another_layer_order_fails_the_test(trained, clips):
    with mock.patch.object(model.pipeline, "SequenceLayout", BgFirstLayout):
        ok, message = learned_enough(decompose(LayerFlowPipeline.from_pretrained(trained), clips), clips)
    assert not ok, f"the mutation went unseen: {message}"


def test_a_pipeline_that_puts_the_condition_elsewhere_fails_the_test(trained, clips):
    pipe = LayerFlowPipeline.from_pretrained(trained)
    forward = pipe.transformer.forward

    def condition_first(*args, cond_indices=None, **kwargs):  # the clean latents handed over at the start
        moved = None if cond_indices is None else list(range(len(cond_indices)))
        return forward(*args, cond_indices=moved, **kwargs)

    pipe.transformer.forward = condition_first
    ok, message = learned_enough(decompose(pipe, clips), clips)
    assert not ok, f"the mutation went unseen: {message}"
