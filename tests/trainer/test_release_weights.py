"""Stage 1 with its full config, starting from the CogVideoX-2B diffusers release as it ships (float16, sharded
T5, SentencePiece tokenizer; tests/release_layout/model.py), shrunk to a CPU run of two steps (float32 weights,
bf16-mixed compute as configured)."""
from __future__ import annotations

import torch
from safetensors.torch import load_file

from data_engine.weights import spec
from model.pipeline import LayerFlowPipeline
from trainer.cli import CONFIG_DIR, main


def test_stage1_full_config_from_the_cogvideox_release(release_weights, shard_dir, tmp_path):
    cogvideox = release_weights / spec("cogvideox-2b").subdir
    run = tmp_path / "stage1"
    argv = ["--stage", "1", "--config", str(CONFIG_DIR / "stage1.yaml"), f"--model.network.pretrained={cogvideox}",
            f"--data.stream.shards={shard_dir}", "--trainer.accelerator=cpu", "--trainer.devices=1",
            "--trainer.max_steps=2", f"--trainer.default_root_dir={run}", f"--trainer.logger.init_args.save_dir={run}",
            "--data.stream.frames_per_layer=4", "--data.stream.height=32", "--data.stream.width=48",
            "--data.stream.num_workers=0", "--data.stream.shuffle_buffer=4"]
    assert main(argv) == 0
    final = run / "final"
    trained = load_file(str(final / "trainable.safetensors"))
    # Stage 1 trains block 5 of 6 (index % 6 == 5) and the layer embedder, nothing else.
    assert trained and all(k.startswith(("transformer_blocks.5.", "layer_embedder.")) for k in trained)
    assert not any("_lora." in k for k in trained)
    exported = LayerFlowPipeline.from_pretrained(final)
    ours = exported.transformer.state_dict()
    # Everything else is the release's float16 weights, exactly: the run started from that folder.
    release = load_file(str(cogvideox / "transformer" / "diffusion_pytorch_model.safetensors"))
    frozen = {k: v for k, v in release.items() if not k.startswith("transformer_blocks.5.")}
    assert all(torch.equal(ours[k], v.float()) for k, v in frozen.items())
    assert any(not torch.equal(ours[k], release[k].float()) for k in trained if k in release)
    t5 = exported.text_encoder.state_dict()
    shards = [load_file(str(p)) for p in (cogvideox / "text_encoder").glob("model-*.safetensors")]
    assert all(torch.equal(t5[k], v.float()) for shard in shards for k, v in shard.items())
