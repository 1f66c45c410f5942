"""K foreground layers in the model (issue 16): the layout's known positions, K = 1 exactly the paper's, prompts
k + 2 for fg_k, any subset of given layers, and the pipeline and `layerflow generate` on K = 2."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data_engine.schema import Captions
from data_engine.video_io import decode_video, encode_alpha, encode_video
from model.generate import main as generate
from model.layout import TASKS, LayoutError, SequenceLayout, Task, prompt_slots, task_spec
from model.pipeline import PipelineInputError, build_tiny_pipeline
from model.text import indexed_prompts
from model.transformer import TransformerInputError

T, H, W = 4, 32, 48


def test_k2_positions_append_the_second_foreground():
    gen = SequenceLayout.for_task("generate", 4, num_foregrounds=2)
    assert gen.layers == ("fg", "alpha", "bg", "blend", "fg_1", "alpha_1")
    assert [gen.latent_indices(n) for n in gen.layers] == [[0], [1], [2], [3], [4], [5]]
    assert gen.frame_slice("alpha_1") == slice(20, 24) and gen.num_frames == 24
    fgc = SequenceLayout.for_task("fg_conditioned", 4, num_foregrounds=2)  # a copy of frame 0 in front
    assert fgc.spec.conditions == ("fg", "alpha", "fg_1", "alpha_1")
    assert fgc.clean_indices == [0, 1, 2, 5, 6] and fgc.noisy_indices == [3, 4]
    dec = task_spec("decompose", 2)
    assert dec.prompt_layers == ("fg", "bg", "fg_1") and dec.generated == ("fg", "alpha", "bg", "fg_1", "alpha_1")


@pytest.mark.parametrize("task", list(TASKS))
def test_k1_specs_are_the_papers(task):
    assert task_spec(task, 1) == TASKS[task] and TASKS[task].layers == ("fg", "alpha", "bg", "blend")
    assert TASKS[task].captioned == ("fg", "bg", "blend")


def test_given_subsets():
    spec = task_spec("given", 2, ("bg", "alpha", "fg"))
    assert spec.task is Task.GIVEN and spec.conditions == ("fg", "alpha", "bg")  # in sequence order
    assert spec.generated == ("blend", "fg_1", "alpha_1") and not spec.duplicate_first_frame
    assert task_spec("given", 1, ("blend",)) == TASKS[Task.DECOMPOSE]  # a paper task is that task
    for bad in ((), ("fg", "alpha", "bg", "blend"), ("fg_2",)):
        with pytest.raises(LayoutError):
            task_spec("given", 1, bad)
    with pytest.raises(LayoutError, match="use task 'given'"):
        task_spec("decompose", 1, ("bg",))


def test_prompts_of_more_foregrounds_follow_the_papers_three():
    captions = Captions("a red disc", "a beach", "both", more_fg=("a blue ring",))
    spec = task_spec("decompose", 2)
    assert indexed_prompts(captions.as_dict(), spec.captioned) == [
        "0, a red disc", "1, a beach", "2, both", "3, a blue ring"]
    assert prompt_slots(spec, 3) == ([0, 1, 2, 3], [True, True, False, True])
    with pytest.raises(LayoutError):  # the official 2-prompt decomposition model reads one foreground
        prompt_slots(spec, 2)


@pytest.fixture(scope="module")
def pipe():
    p = build_tiny_pipeline(0)
    p.set_progress_bar_config(disable=True)
    return p


def _video(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (T, H, W, 3), dtype=np.uint8)


def test_the_transformer_reads_each_foregrounds_prompt():
    """The fourth prompt (fg_1's) changes the prediction, with its own layer index: the same text under
    another index (the layer embedding of prompt 3 replaced by prompt 2's) predicts something else."""
    model = build_tiny_pipeline(0).transformer
    n = model.layerflow_config.text_tokens_per_prompt
    with torch.no_grad():
        model.layer_embedder[1].weight.normal_()  # trained embedders are not zero; the init is
    x = torch.randn(1, 6, 16, H // 8, W // 8)
    text = torch.randn(1, 4 * n, 32)
    spec = task_spec("generate", 2)
    out = model(x, text, torch.tensor([500]), spec=spec)
    other = text.clone()
    other[:, 3 * n:] += 1.0
    assert not torch.allclose(out, model(x, other, torch.tensor([500]), spec=spec))
    index = model.layer_embeddings(spec)
    assert index.shape[0] == 4 * n
    assert not torch.equal(index[3 * n], index[2 * n]) and torch.equal(index[:3 * n], model.layer_embeddings())
    # The spec, not the text's length, says how many prompts there are: K + 2 prompts need it.
    with pytest.raises(TransformerInputError, match=f"4 prompts x {n} T5 tokens"):
        model(x, text[:, :3 * n], torch.tensor([500]), spec=spec)
    with pytest.raises(TransformerInputError, match="pass spec= for K foregrounds"):
        model(x, text, torch.tensor([500]))


def test_pipeline_given_layers_come_back_unchanged(pipe):
    bg, fg1 = _video(1), _video(2)
    alpha1 = np.random.default_rng(3).integers(0, 256, (T, H, W), dtype=np.uint8)
    out = pipe(captions=Captions("a red disc", "a beach", more_fg=("a blue ring",)),
               task=task_spec("given", 2, ("bg", "fg_1", "alpha_1")),
               layers={"bg": bg, "fg_1": fg1, "alpha_1": alpha1}, num_frames=T, height=H, width=W,
               num_inference_steps=2)
    clip = out.clips[0]
    assert clip.num_foregrounds == 2 and clip.captions.more_fg == ("a blue ring",) and clip.depth_order == (0, 1)
    assert np.array_equal(clip.bg, bg) and np.array_equal(clip.layer("fg_1"), fg1)
    assert np.array_equal(clip.layer("alpha_1"), alpha1)
    assert out.latents.shape[1] == 6
    two = Captions("a", more_fg=("b",))
    common = dict(num_frames=T, height=H, width=W, num_inference_steps=1)
    with pytest.raises(PipelineInputError, match="fg_1"):
        pipe(captions=two, task=task_spec("fg_conditioned", 2), layers={"fg": fg1, "alpha": alpha1}, **common)
    with pytest.raises(PipelineInputError, match="not both"):
        pipe("a", captions=two, **common)
    # K is the spec's: prompts for another K, a task's name for K = 2, or layers beyond the spec are refused.
    with pytest.raises(PipelineInputError, match="prompts are for 2 foreground\\(s\\), the task for 1"):
        pipe(captions=two, task="generate", **common)
    with pytest.raises(PipelineInputError, match="task_spec\\('given', K, layers\\)"):
        pipe(captions=two, task="given", layers={"bg": bg}, **common)
    with pytest.raises(PipelineInputError, match="unknown layer 'fg_1'"):
        pipe("a", task="bg_conditioned", layers={"bg": bg, "fg_1": fg1}, **common)


def test_the_pipeline_hands_its_spec_to_the_transformer(pipe, monkeypatch):
    """The spec the caller builds is the one the transformer reads: nothing on the way derives K again."""
    seen = []
    forward = pipe.transformer.forward

    def record(*args, spec=None, **kwargs):
        seen.append(spec)
        return forward(*args, spec=spec, **kwargs)

    monkeypatch.setattr(pipe.transformer, "forward", record)
    spec = task_spec("decompose", 2)
    out = pipe(captions=Captions("a dog", "a park", more_fg=("a ball",)), task=spec, layers={"blend": _video(4)},
               num_frames=T, height=H, width=W, num_inference_steps=2)
    assert len(seen) == 2 and all(s is spec for s in seen)
    assert out.clips[0].num_foregrounds == 2 and out.latents.shape[1] == 6


def test_generate_cli_decomposes_into_two_foregrounds(tmp_path, capsys):
    blend = tmp_path / "blend.mp4"
    blend.write_bytes(encode_video(_video(4), 8.0))
    argv = ["--task", "decompose", "--foregrounds", "2", "--blend", str(blend), "--fg-prompt", "a dog",
            "--fg-prompt", "a ball", "--bg-prompt", "a park", "--frames", str(T), "--steps", "1",
            "--formats", "png", "--out", str(tmp_path / "out")]
    assert generate(argv) == 0
    folder = tmp_path / "out" / "decompose"
    meta = json.loads((folder / "clip.json").read_text())
    assert meta["num_foregrounds"] == 2 and meta["captions"]["fg_1"] == "a ball"
    assert (folder / "fg_1_rgba").is_dir() and (folder / "alpha_1.mp4").is_file()


def test_generate_cli_given_layers_by_name(tmp_path, capsys):
    bg, alpha = tmp_path / "bg.mp4", tmp_path / "alpha_1.mp4"
    bg.write_bytes(encode_video(_video(5), 8.0))
    alpha.write_bytes(encode_alpha(np.full((T, H, W), 255, np.uint8), 8.0, lossless=True))
    base = ["--foregrounds", "2", "--frames", str(T), "--steps", "1", "--formats", "png", "--out", str(tmp_path)]
    assert generate(["--task", "given", "--background", str(bg), "--layer", f"alpha_1={alpha}",
                     "--layer", f"fg_1={bg}", "--fg-prompt", "a dog", "--fg-prompt", "a ball", *base]) == 0
    assert "[given]" in capsys.readouterr().out
    assert np.array_equal(decode_video((tmp_path / "given" / "alpha_1.mp4").read_bytes(), grey=True),
                          np.full((T, H, W), 255))
    assert generate(["--task", "given", "--layer", "fg_3=x.mp4", *base]) == 2
    assert "fg_3" in capsys.readouterr().err
    assert generate(["--fg-prompt", "a", "--fg-prompt", "b", "--fg-prompt", "c", *base]) == 2
    assert "--foregrounds 3" in capsys.readouterr().err
