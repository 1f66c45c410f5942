"""The tiny preset's tokenizer against the tiny world's captions: each word one token, each indexed prompt of a
one- or two-object clip within the preset's tokens per prompt (nothing truncated)."""
from __future__ import annotations

import pytest

from data_engine.synthetic import SyntheticConfig, caption_vocabulary, synthetic_truth
from model.config import get_preset
from model.layout import task_spec
from model.text import build_tiny_tokenizer, indexed_prompts


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def world_captions(objects: int, clips: int = 64) -> list[dict[str, str]]:
    world = SyntheticConfig(num_frames=2, height=32, width=32, seed=3, num_objects=objects)
    return [synthetic_truth(world, i).captions.as_dict() for i in range(clips)]


@pytest.mark.parametrize("objects", [1, 2])
def test_every_caption_word_is_one_token(tokenizer, objects):
    for captions in world_captions(objects):
        for text in captions.values():
            words = text.rstrip(".").split()
            assert set(words) <= set(caption_vocabulary()), text
            pieces = tokenizer.tokenize(text)
            assert pieces == [f"\u2581{w}" for w in words] + ["."], pieces


@pytest.mark.parametrize("objects", [1, 2])
def test_indexed_prompts_fit_the_tiny_preset(tokenizer, objects):
    budget = get_preset("tiny").text_tokens_per_prompt
    spec = task_spec("generate", objects)
    lengths = [len(tokenizer(p).input_ids)
               for captions in world_captions(objects) for p in indexed_prompts(captions, spec.captioned)]
    assert max(lengths) <= budget
    if objects == 2:  # the budget is sized to K = 2: a longer one would be padding the transformer attends over
        assert max(lengths) > budget * 3 // 4
