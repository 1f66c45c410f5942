"""Prompt encoding: each layer's prompt, prefixed with its index, T5-encoded alone and concatenated.

`"0, " + fg`, `"1, " + bg`, `"2, " + blend` are tokenised to exactly 226 tokens each (padded or truncated, as
CogVideoX's T5 conditioner does), encoded by T5 separately, and concatenated along the sequence. The
unconditional branch of classifier-free guidance is all-zero embeddings, not an encoded empty prompt.

Also the tiny tokenizer for the `tiny` preset: a SentencePiece unigram model trained in-process from a fixed
string, loaded through `T5Tokenizer.from_pretrained` exactly like the real `tokenizer/spiece.model`. Every word
of the tiny world's captions (`data_engine.synthetic.caption_vocabulary`) is a single token in it, as English words
are in T5's vocabulary: spelled out in sub-word pieces, a colour is a sequence of letters that the tiny model needs
far more training to read (at 1200 steps the model still ignored its prompts), and a caption three times as many
tokens, each of which the transformer attends over (BENCHMARKS.md, "Recipe choices and their effect").
"""
from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from data_engine.synthetic import caption_vocabulary
from model.layout import LayoutError, prompt_index

logger = logging.getLogger(__name__)

MAX_PROMPT_TOKENS = 226

TINY_CORPUS = """\
0, A brown dog runs across the green grass and jumps over a small log.
1, A quiet park with tall trees, a brick path and yellow flowers under the warm sun.
2, A woman in a black dress walks along a sidewalk in the city at sunset.
A red balloon floats slowly in the clear blue sky above the rooftops.
Waves roll onto a sandy beach while birds fly over the water.
The background is a grey street with parked cars, shops and a blue shed.
A rhinoceros with thick grey skin walks on a dirt path in a zoo enclosure.
A cat sits on a wooden table next to a window, its tail moving gently.
Snow falls on a mountain village; smoke rises from the chimneys of old houses.
The camera follows a cyclist riding down a winding road through a forest.
"""


class PromptError(ValueError):
    """Prompts that do not fit the task; the message says which are missing."""


def indexed_prompts(captions: Mapping[str, str], layers: Sequence[str]) -> list[str]:
    """The prompts of `layers` in order, each prefixed with its layer index ("0, ", "1, ", "2, ", "3, " for fg_1...)."""
    out = []
    for layer in layers:
        try:
            index = prompt_index(layer)
        except LayoutError as exc:
            raise PromptError(str(exc)) from None
        out.append(f"{index}, {captions.get(layer, '') or ''}")
    return out


@torch.no_grad()
def encode_prompts(
    tokenizer,
    text_encoder,
    prompts: Sequence[Sequence[str]],
    *,
    max_length: int = MAX_PROMPT_TOKENS,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """B samples x P prompts -> [B, P * max_length, d_model] T5 embeddings (each prompt encoded on its own)."""
    if not prompts or len({len(p) for p in prompts}) != 1 or len(prompts[0]) == 0:
        raise PromptError("every sample needs the same, non-zero number of prompts")
    batch, per_sample = len(prompts), len(prompts[0])
    flat = [p for sample in prompts for p in sample]
    tokens = tokenizer(
        flat,
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    ).input_ids
    full_lengths = [len(ids) for ids in tokenizer(flat, add_special_tokens=True).input_ids]
    for text, n in zip(flat, full_lengths):
        if n > max_length:
            logger.warning("prompt truncated to %d tokens (it has %d): %.80s...", max_length, n, text)
    device = device or text_encoder.device
    # Each row is padded to the full length and T5 gets no attention mask (as in CogVideoX), so encoding
    # all B * P prompts in one batch equals encoding them one at a time.
    hidden = text_encoder(tokens.to(device))[0]
    hidden = hidden.to(dtype=dtype or text_encoder.dtype)
    return hidden.reshape(batch, per_sample * max_length, hidden.shape[-1])


def unconditional_embeddings(prompt_embeds: torch.Tensor) -> torch.Tensor:
    """The unconditional CFG branch: zeros, as the official model was trained (prompt dropout zeroes embeddings)."""
    return torch.zeros_like(prompt_embeds)


def train_tiny_spiece(corpus: str = TINY_CORPUS, words: Sequence[str] | None = None) -> bytes:
    """A deterministic SentencePiece unigram model (T5's special-token ids: pad 0, eos 1, unk 2) in which each of
    `words` (default: every word of the tiny world's captions) is one token at the start of a word."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus.splitlines()),
        model_writer=buf,
        vocab_size=256,
        hard_vocab_limit=False,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
        user_defined_symbols=[f"\u2581{word}" for word in (caption_vocabulary() if words is None else words)],
    )
    return buf.getvalue()


def build_tiny_tokenizer(corpus: str = TINY_CORPUS):
    """A T5Tokenizer over an in-process SentencePiece model, loaded the way a real `tokenizer/` folder is."""
    from transformers import T5Tokenizer

    with tempfile.TemporaryDirectory(prefix="layerflow-tiny-tok-") as tmp:
        Path(tmp, "spiece.model").write_bytes(train_tiny_spiece(corpus))
        return T5Tokenizer.from_pretrained(tmp, extra_ids=0)
