"""Speed options of the transformer: the SDPA kernel choice and regional compilation (timed in benchmarks/model.py)."""
from __future__ import annotations

import pytest
import torch

from model.config import get_preset
from model.numerics import assert_float32_close
from model.transformer import LayerFlowTransformer, TransformerInputError


@pytest.fixture(scope="module")
def model_and_inputs():
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    model = LayerFlowTransformer.from_config(cfg).eval()
    x = torch.randn(2, 4, cfg.in_channels, cfg.sample_height, cfg.sample_width)
    text = torch.randn(2, cfg.max_text_seq_length, cfg.text_embed_dim)
    return model, (x, text, torch.tensor([900.0, 10.0]))


def test_backend_choice_is_applied_and_keeps_outputs(model_and_inputs):
    model, inputs = model_and_inputs
    try:
        with torch.no_grad():
            default = model(*inputs)
            model.set_attention_backends(["math"])
            math = model(*inputs)
            # cuDNN attention cannot run on a CPU: only a choice that reaches SDPA makes this fail.
            model.set_attention_backends(["cudnn"])
            with pytest.raises(RuntimeError):
                model(*inputs)
            # A list is an order of preference: the CPU falls through to the next kernel.
            model.set_attention_backends(["cudnn", "math"])
            fallback = model(*inputs)
            model.set_attention_backends(None)
            again = model(*inputs)
    finally:
        model.set_attention_backends(None)
    assert_float32_close(math, default, ulps=64, what="math vs default attention")
    assert torch.equal(fallback, math)
    assert torch.equal(again, default)


@pytest.mark.parametrize("names", [["flash3"], [], ["cudnn", "fast"]])
def test_unknown_backend_is_refused(model_and_inputs, names):
    model, _ = model_and_inputs
    with pytest.raises(TransformerInputError, match="cudnn, flash, efficient, math"):
        model.set_attention_backends(names)
    assert model.sdpa_backends is None


def test_regional_compilation_wraps_exactly_the_blocks():
    cfg = get_preset("tiny")
    model = LayerFlowTransformer.from_config(cfg).eval()
    model.compile_repeated_blocks()  # lazy: nothing is compiled until a forward runs
    compiled = {name for name, m in model.named_modules() if getattr(m, "_compiled_call_impl", None) is not None}
    assert compiled == {f"transformer_blocks.{i}" for i in range(cfg.num_layers)}


def test_generate_cli_compile_and_fuse_flags():
    from model.generate import parse_args, pipeline_for
    from model.layout import task_spec
    from model.lora import lora_merged

    args = parse_args(["--compile", "--fuse-lora", "--device", "cpu", "--dtype", "float32"])
    pipe = pipeline_for(args, task_spec("generate"))
    blocks = pipe.transformer.transformer_blocks
    assert all(getattr(b, "_compiled_call_impl", None) is not None for b in blocks)
    assert lora_merged(pipe.transformer)
    plain = pipeline_for(parse_args(["--device", "cpu", "--dtype", "float32"]), task_spec("generate"))
    assert all(getattr(b, "_compiled_call_impl", None) is None for b in plain.transformer.transformer_blocks)
    assert not lora_merged(plain.transformer)
