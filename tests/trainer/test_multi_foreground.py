"""Training on clips with K foregrounds (issue 16): batches grouped by K, the generalised conditions, the loss on
the generated layers only, and the K = 1 path unchanged."""
from __future__ import annotations

import json
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_tensors

from data_engine.shards import ShardSink
from data_engine.synthetic import SyntheticConfig, synthetic_clip
from model.layout import SequenceLayout, Task, task_spec
from trainer.cache import TENSORS_MEMBER, encode_examples
from trainer.config import OptimConfig
from trainer.data import LayerFlowDataModule, collate, decode_cached, sample_given

WORLD = SyntheticConfig(num_frames=6, height=40, width=56, seed=5)


@pytest.fixture(scope="module")
def mixed_shards(tmp_path_factory):
    """Three one-object and three two-object clips in one shard, interleaved."""
    out = tmp_path_factory.mktemp("mixed_k")
    with ShardSink(out, maxcount=8) as sink:
        for i in range(3):
            sink.write(synthetic_clip(WORLD, i))
            sink.write(synthetic_clip(replace(WORLD, num_objects=2, seed=6), i))
    return out


@pytest.fixture(scope="module")
def stream(mixed_shards, tiny_data):
    dm = LayerFlowDataModule(tiny_data(mixed_shards, tasks={"decompose": 1, "given": 1}, prompt_dropout=0.0),
                             stage=1)
    return dm.stream()


def test_batches_never_mix_the_number_of_foregrounds(stream):
    batches = [b for b, _ in zip(stream, range(12))]
    counts = [b["num_foregrounds"] for b in batches]
    assert set(counts) == {1, 2}
    for b in batches:
        layout = SequenceLayout(task_spec(b["task"], b["num_foregrounds"], tuple(b["given"]) or None), 4)
        assert b["video"].shape[:2] == (2, layout.num_frames)
        assert b["prompt_keep"].shape == (2, b["num_foregrounds"] + 2)
        # Each prompt carries its layer's index: fg_1's is "3, ".
        assert [p.split(",")[0] for p in b["prompts"][0]] == [str(i) for i in range(b["num_foregrounds"] + 2)]


def test_given_subsets_keep_each_foreground_whole_and_cover_the_paper_tasks():
    rng = random.Random(0)
    seen = set()
    for _ in range(400):
        given = sample_given(rng, 2)
        assert given and len(given) < 6
        assert ("fg_1" in given) == ("alpha_1" in given) and ("fg" in given) == ("alpha" in given)
        seen.add(task_spec("given", 2, given).task)
    # Every conditional paper task is one of the subsets (generation, given nothing, is not), the rest "given".
    assert seen == set(Task) - {Task.GENERATE}


def test_k2_batch_trains_the_generated_layers_only(stream, tiny_module, tiny_yaml):
    """A 'given bg and fg 0' batch of two-object clips: the diffusion target is the generated layers' latents
    (blend, fg_1, alpha_1) and nothing else, and the module fits the batch."""
    cfg = tiny_yaml(1)
    module = tiny_module(1, optim=OptimConfig(**cfg["model"]["optim"]))
    examples = [e for e in stream.first_examples(8) if e["num_foregrounds"] == 2][:2]
    batch = collate(examples, "given", 4, given=("fg", "alpha", "bg"))
    assert batch["task"] == "given" and batch["given"] == ["fg", "alpha", "bg"]
    layout = module.batch_layout(batch)
    assert layout.spec.generated == ("blend", "fg_1", "alpha_1")
    latents, text = module.encode_batch(batch, 0)
    assert latents.shape[1] == layout.num_latents == 6 and text.shape[1] == 4 * module.text_tokens
    assert layout.noisy_indices == [3, 4, 5]
    wrong = torch.randn(2, layout.num_latents, *latents.shape[2:])  # noise for every latent, given ones too
    with pytest.raises(RuntimeError, match="must match the size"):  # torch's broadcasting error
        module.compute_loss(batch, 0, noise=wrong)
    opt = module.configure_optimizers()["optimizer"]
    losses = []
    for _ in range(20):  # one fixed draw of timesteps and noise (step 0), as test_module's overfitting tests
        opt.zero_grad()
        loss = module.compute_loss(batch, 0).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.trainable_parameters(), cfg["trainer"]["gradient_clip_val"])
        opt.step()
        losses.append(loss.item())
    assert losses[-1] <= 0.75 * losses[0], losses  # measured: 0.67 of the first loss after 20 steps


def test_the_latent_cache_holds_k2_clips_as_the_pixel_path_encodes_them(stream, tiny_module, tmp_path):
    """A two-object clip's cache entry has the K = 2 packings and four prompts; a cached batch trains the same
    layout as the pixel path (same shapes, same text), and task 'given' is refused from the cache."""
    module = tiny_module(1)
    example = [e for e in stream.first_examples(8) if e["num_foregrounds"] == 2][0]
    [tensors] = encode_examples([(example["layers"], example["captions"], torch.Generator().manual_seed(0))], 4,
                                module.vae, module.text_encoder, module.tokenizer, module.text_tokens, 2)
    assert tensors["latents"].shape[0] == 6 and tensors["latents_dup"].shape[0] == 7
    assert tensors["cond_fg_conditioned"].shape[0] == 5 and tensors["prompt_embeds"].shape[0] == 4 * module.text_tokens
    raw = {TENSORS_MEMBER: save_tensors(tensors), "json": json.dumps(
        {"key": example["key"], "origin": "engine", "kind": "video", "captions": example["captions"],
         "num_foregrounds": 2}).encode()}
    cached = decode_cached(raw, static_videos=False, prompt_dropout=0.0, rng=np.random.default_rng(0))
    batch = collate([cached, cached], "decompose", 4)
    pixels = collate([example, example], "decompose", 4)
    latents, text = module.encode_batch(batch, 0)
    pixel_latents, pixel_text = module.encode_batch(pixels, 0)
    assert latents.shape == pixel_latents.shape and torch.equal(text, pixel_text)
    with pytest.raises(ValueError, match="use_cache=false"):
        collate([cached], "given", 4, given=("fg", "alpha", "bg"))
