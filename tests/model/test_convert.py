"""The official-checkpoint converter: the sat_tiny fixture, another size, variant detection, every release float32
and sampling, bad files."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.config import get_preset
from model.convert import (
    ConversionError,
    convert_checkpoint,
    detect_variant,
    infer_config,
    load_official_state_dict,
    main,
    parity_tolerance,
    task_from_name,
)
from model.layout import SequenceLayout
from model.lora import lora_parameters
from model.sampler_fixture import latent_pipeline
from model.transformer import LayerFlowTransformer

LINE = re.compile(r"^\s+(\S+)\s+max\|diff\| = (\S+) <= (\S+)\s+(ok|FAIL)$", re.M)


def _verify(folder: Path, capsys) -> tuple[int, dict[str, float]]:
    """Exit code and max |diff| per check; every printed verdict must agree with its diff and tolerance."""
    code = main(["verify-fixture", str(folder)])
    lines = LINE.findall(capsys.readouterr().out)
    assert all((float(diff) <= float(tol)) == (verdict == "ok") for _, diff, tol, verdict in lines)
    return code, {label: float(diff) for label, diff, _, _ in lines}


def test_verify_fixture_matches_the_official_forward(sat_tiny, capsys):
    code, diffs = _verify(sat_tiny, capsys)
    assert code == 0
    expected = {"output", "fg2bg.output", "variant.scale_0_0", "variant.scale_1_1", "variant.scale_int_0",
                "variant.scale_int_1", "variant.lora_only_layers_mod6_eq5"}
    assert expected <= set(diffs)


def test_verify_fixture_fails_on_a_wrong_reference(sat_tiny, tmp_path, capsys):
    for name in ("gen_state_dict.safetensors", "gen_inputs.safetensors"):
        shutil.copy(sat_tiny / name, tmp_path / name)
    meta = json.loads((sat_tiny / "fixture.json").read_text())
    (tmp_path / "fixture.json").write_text(json.dumps({"config": meta["config"],
                                                       "layernorm_eps": meta["layernorm_eps"]}))
    outputs = load_file(str(sat_tiny / "gen_outputs.safetensors"))
    save_file({"output": outputs["output"] + 1e-3}, str(tmp_path / "gen_outputs.safetensors"))
    code, diffs = _verify(tmp_path, capsys)
    assert code == 1 and 9e-4 < diffs["output"] < 1.1e-3


# ---- another size: our model -> official names (written here independently) -> converter -> same output ----
def _to_official(model: LayerFlowTransformer) -> dict[str, torch.Tensor]:
    cfg, sd = model.layerflow_config, model.state_dict()
    out: dict[str, torch.Tensor] = {}

    def put(ours: str, official: str) -> None:
        for s in (".weight", ".bias"):
            out[official + s] = sd[ours + s]

    put("patch_embed.proj", "mixins.patch_embed.proj")
    put("patch_embed.text_proj", "mixins.patch_embed.text_proj")
    put("time_embedding.linear_1", "time_embed.0")
    put("time_embedding.linear_2", "time_embed.2")
    out["mixins.pos_embed.pos_embedding"] = (sd["pos_embedding"] if cfg.learned_pos_embedding
                                             else model.patch_embed.pos_embedding)
    if cfg.layer_embedding:
        put("layer_embedder.0", "mixins.pos_embed.txt_embedder.0")
        put("layer_embedder.1", "mixins.pos_embed.txt_embedder.1")
    put("norm_final", "transformer.final_layernorm")
    put("norm_out.norm", "mixins.final_layer.norm_final")
    put("norm_out.linear", "mixins.final_layer.adaLN_modulation.1")
    put("proj_out", "mixins.final_layer.linear")
    for i in range(cfg.num_layers):
        b, o = f"transformer_blocks.{i}", f"transformer.layers.{i}"
        put(f"{b}.norm1.norm", f"{o}.input_layernorm")
        put(f"{b}.norm2.norm", f"{o}.post_attention_layernorm")
        put(f"{b}.ff.net.0.proj", f"{o}.mlp.dense_h_to_4h")
        put(f"{b}.ff.net.2", f"{o}.mlp.dense_4h_to_h")
        put(f"{b}.attn1.norm_q", f"mixins.adaln_layer.query_layernorm_list.{i}")
        put(f"{b}.attn1.norm_k", f"mixins.adaln_layer.key_layernorm_list.{i}")
        for s in (".weight", ".bias"):
            n1, n2 = sd[f"{b}.norm1.linear{s}"].chunk(6), sd[f"{b}.norm2.linear{s}"].chunk(6)
            out[f"mixins.adaln_layer.adaLN_modulations.{i}.1{s}"] = torch.cat([*n1[:3], *n2[:3], *n1[3:], *n2[3:]])
        lora = i in cfg.lora_block_indices()
        qkv, dense = f"{o}.attention.query_key_value", f"{o}.attention.dense"
        for s in (".weight", ".bias"):
            out[f"{qkv}{'.original' if lora else ''}{s}"] = torch.cat([sd[f"{b}.attn1.to_{p}{s}"] for p in "qkv"])
        put(f"{b}.attn1.to_out.0", dense + (".original" if lora else ""))
        if lora:
            for letter, ours in zip("ABCD", ("motion_lora.down", "motion_lora.up", "content_lora.down",
                                             "content_lora.up")):
                for j, p in enumerate("qkv"):
                    out[f"{qkv}.matrix_{letter}.{j}"] = sd[f"{b}.attn1.to_{p}.{ours}.weight"]
                out[f"{dense}.matrix_{letter}.0"] = sd[f"{b}.attn1.to_out.0.{ours}.weight"]
    return {"model.diffusion_model." + k: v.contiguous() for k, v in out.items()}


def _other_size_model() -> LayerFlowTransformer:
    config = get_preset("tiny").replace(
        text_tokens_per_prompt=226, spatial_interpolation_scale=1.875,  # the official code's, whatever the size
        num_layers=3, num_attention_heads=3, attention_head_dim=16, text_embed_dim=24, time_embed_dim=40,
        sample_height=6, sample_width=4, sample_frames=5, num_prompts=2, layer_embedding=False,
        learned_pos_embedding=True, motion_rank=3, content_rank=5, lora_blocks=(0, 2))
    torch.manual_seed(7)
    model = LayerFlowTransformer.from_config(config).eval()
    with torch.no_grad():
        for _, p in lora_parameters(model):
            p.normal_(0, 0.3)
        model.pos_embedding.add_(0.1 * torch.randn_like(model.pos_embedding))
    return model


def test_verify_fixture_on_another_size(tmp_path, capsys):
    model = _other_size_model()
    g = torch.Generator().manual_seed(3)
    x, cond = torch.randn(2, 3, 16, 6, 4, generator=g), torch.randn(2, 2, 16, 6, 4, generator=g)
    context = torch.randn(4, 226, 24, generator=g)  # "(b p) n d": two prompts per sample
    t, scale = torch.tensor([10.0, 900.0]), torch.tensor([1.0, 0.0])
    with torch.no_grad():
        text = context.reshape(2, 452, 24)
        # task_idx 3 (decomposition): the clean latents go after the noisy ones.
        out = model(x, text, t, cond_latents=cond, motion_scale=scale, cond_indices=[3, 4])
        off = model(x, text, t, cond_latents=cond, cond_indices=[3, 4])
    save_file(_to_official(model), str(tmp_path / "seg_state_dict.safetensors"))
    save_file({"x": x, "cond_input": cond, "context": context, "timesteps": t, "scale": scale},
              str(tmp_path / "seg_inputs.safetensors"))
    save_file({"output": out, "variant.scale_int_0": off}, str(tmp_path / "seg_outputs.safetensors"))
    pos = {"text_length": 452, "learnable_pos_embed": True}
    meta = {"seg_config": {"params": {"latent_height": 6, "latent_width": 4,
                                      "modules": {"pos_embed_config": {"params": pos}}}},
            "non_tensor_inputs": {"seg": {"task_idx": 3}},
            "variants": {"scale_int_0": {"overrides": {"scale": 0}}}}
    (tmp_path / "fixture.json").write_text(json.dumps(meta))
    code, diffs = _verify(tmp_path, capsys)
    assert code == 0 and set(diffs) == {"output", "variant.scale_int_0"}  # a single run needs no prefix
    # Without any config: sizes from the state dict, geometry from --latent-size, a trained table detected.
    cfg, variant = infer_config(load_official_state_dict(tmp_path / "seg_state_dict.safetensors"), latent_size=(6, 4))
    assert cfg == model.layerflow_config.replace(final_norm_eps=cfg.final_norm_eps, norm_eps=cfg.norm_eps)
    assert (variant.task, variant.colour) == ("decompose", "rgb")


# ---- variants ------------------------------------------------------------------------------------------------
def test_detects_the_fixture_variants(sat_tiny):
    meta = json.loads((sat_tiny / "fixture.json").read_text())
    gen = load_official_state_dict(sat_tiny / "gen_state_dict.safetensors")
    fg2bg = load_official_state_dict(sat_tiny / "fg2bg_state_dict.safetensors")
    cfg, variant = infer_config(gen, meta["config"])
    assert (variant.task, variant.colour, variant.name) == ("generate", "rgba", "multi-layer-generation-rgba")
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.text_embed_dim) == (6, 64, 4, 32)
    assert (cfg.motion_rank, cfg.content_rank, cfg.lora_block_indices()) == (2, 4, tuple(range(6)))
    assert (cfg.sample_frames, cfg.num_prompts, cfg.layer_embedding, cfg.learned_pos_embedding) == (16, 3, True, False)
    _, unnamed = infer_config(fg2bg, meta["fg2bg_config"])
    assert unnamed.task is None and unnamed.candidates == ["fg_conditioned", "bg_conditioned"]
    _, named = infer_config(fg2bg, meta["fg2bg_config"], name="background-conditioned-generation-rgba")
    assert named.name == "background-conditioned-generation-rgba"
    with pytest.raises(ConversionError, match="says decompose"):
        infer_config(fg2bg, meta["fg2bg_config"], name="cogvideox_2b_stage2_seg_rgba")


@pytest.mark.parametrize("frames, prompts, embed, learned, name, expected", [
    (16, 3, True, False, None, "multi-layer-generation-rgba"),
    (16, 2, False, True, None, "multi-layer-decomposition-rgba"),
    (17, 3, True, False, "fg2bg", "foreground-conditioned-generation-rgba"),
    (17, 3, True, False, "bg2fg", "background-conditioned-generation-rgba"),
    (13, 3, False, False, None, "multi-layer-generation-rgb"),
    (13, 2, False, True, None, "multi-layer-decomposition-rgb"),
    (13, 3, False, True, "foreground-conditioned-generation-rgb", "foreground-conditioned-generation-rgb"),
    (13, 3, False, True, None, "unresolved(fg_conditioned|bg_conditioned)-rgb"),
])
def test_detect_variant_table(frames, prompts, embed, learned, name, expected):
    cfg = get_preset("cogvideox-2b").replace(sample_frames=frames, num_prompts=prompts, layer_embedding=embed,
                                             learned_pos_embedding=learned)
    assert detect_variant(cfg, name).name == expected


# The eight releases' structures: latent frames, prompts, layer-index embedder, trained position table.
RELEASES = {
    "multi-layer-generation-rgba": (16, 3, True, False),
    "multi-layer-decomposition-rgba": (16, 2, False, True),
    "foreground-conditioned-generation-rgba": (17, 3, True, False),
    "background-conditioned-generation-rgba": (17, 3, True, False),
    "multi-layer-generation-rgb": (13, 3, False, False),
    "multi-layer-decomposition-rgb": (13, 2, False, True),
    "foreground-conditioned-generation-rgb": (13, 3, False, True),
    "background-conditioned-generation-rgb": (13, 3, False, True),
}


def _converted_release(name: str, folder: Path) -> LayerFlowTransformer:
    """A tiny model of the release `name`'s structure, written under the official names and converted back."""
    frames, prompts, embed, learned = RELEASES[name]
    config = get_preset("tiny").replace(
        text_tokens_per_prompt=226, spatial_interpolation_scale=1.875, num_layers=2, lora_blocks=(1,),
        sample_height=4, sample_width=6, sample_frames=frames, num_prompts=prompts, layer_embedding=embed,
        learned_pos_embedding=learned)
    torch.manual_seed(5)
    source = LayerFlowTransformer.from_config(config).eval()
    if learned:
        with torch.no_grad():  # trained away from its sin-cos start, as the releases' tables are
            source.pos_embedding.add_(0.1 * torch.randn_like(source.pos_embedding))
    save_file(_to_official(source), str(folder / f"{name}.safetensors"))
    model, variant = convert_checkpoint(folder / f"{name}.safetensors", latent_size=(4, 6))
    assert variant.name == name
    return model


@pytest.mark.parametrize("name", list(RELEASES))
def test_every_converted_release_is_float32(name, tmp_path):
    """diffusers builds the sin-cos table in float64; the trained table that starts from it must not stay so."""
    model = _converted_release(name, tmp_path)
    assert model.dtype == torch.float32
    assert {p.dtype for p in model.parameters()} == {torch.float32}


@pytest.mark.parametrize("name", [n for n in RELEASES if n.endswith("-rgba")])  # the layouts our pipeline samples
def test_every_converted_rgba_release_samples(name, tmp_path):
    model = _converted_release(name, tmp_path)
    task = task_from_name(name)
    pipe = latent_pipeline(model)
    layout = SequenceLayout.for_task(task)
    g = torch.Generator().manual_seed(6)
    embeds = torch.randn(1, model.layerflow_config.max_text_seq_length, 32, generator=g)
    clean = torch.randn(1, len(layout.clean_indices), 16, 4, 6, generator=g) if layout.clean_indices else None
    out = pipe(task=task, prompt_embeds=embeds, condition_latents=clean, num_frames=16, num_inference_steps=2,
               height=4 * pipe.vae_scale_factor_spatial, width=6 * pipe.vae_scale_factor_spatial,
               generator=g, output_type="latent")
    assert out.latents.shape == (1, model.layerflow_config.sample_frames, 16, 4, 6)
    assert out.latents.isfinite().all() and out.latents.std() > 0.1


def _gen_forward(model: LayerFlowTransformer, sat_tiny: Path) -> torch.Tensor:
    """The model's output on the fixture's `gen` inputs (x, text, timesteps, motion scale)."""
    inputs = load_file(str(sat_tiny / "gen_inputs.safetensors"))
    with torch.no_grad():
        return model(inputs["x"], inputs["context"].reshape(2, 678, 32), inputs["timesteps"],
                     motion_scale=inputs["scale"])


def test_zero_lora_layers_follow_the_checkpoint(sat_tiny, tmp_path):
    meta = json.loads((sat_tiny / "fixture.json").read_text())
    spec = meta["variants"]["lora_only_layers_mod6_eq5"]
    sd = load_file(str(sat_tiny / "gen_state_dict.safetensors"))
    sd = {k: torch.zeros_like(v) if k in spec["zeroed_keys"] else v for k, v in sd.items()}
    save_file(sd, str(tmp_path / "gen_state_dict.safetensors"))
    model, variant = convert_checkpoint(tmp_path / "gen_state_dict.safetensors", official_config=meta["config"])
    assert model.layerflow_config.lora_block_indices() == (5,)
    out = _gen_forward(model, sat_tiny)
    ref = load_file(str(sat_tiny / "gen_outputs.safetensors"))["variant.lora_only_layers_mod6_eq5"]
    assert (out - ref).abs().max() <= parity_tolerance(ref)


def test_sat2ours_writes_a_loadable_folder(sat_tiny, tmp_path, capsys):
    out_dir = tmp_path / "converted"
    code = main(["sat2ours", str(sat_tiny / "gen_state_dict.safetensors"), str(out_dir),
                 "--config", str(sat_tiny / "fixture.json")])
    assert code == 0 and "multi-layer-generation-rgba" in capsys.readouterr().out
    report = json.loads((out_dir / "conversion.json").read_text())
    assert report["variant"] == "multi-layer-generation-rgba"
    model = LayerFlowTransformer.from_pretrained(str(out_dir)).eval()
    out = _gen_forward(model, sat_tiny)
    ref = load_file(str(sat_tiny / "gen_outputs.safetensors"))["output"]
    assert (out - ref).abs().max() <= parity_tolerance(ref)


# ---- bad files -----------------------------------------------------------------------------------------------
class _NotATensor:
    pass


def test_bad_checkpoints_give_one_clear_line(tmp_path, capsys):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00garbage")
    torch_junk = tmp_path / "junk.pt"
    torch_junk.write_bytes(b"not a zip file")
    wrong = tmp_path / "wrong.pt"
    torch.save({"module": {"encoder.weight": torch.zeros(2)}}, wrong)
    pickled = tmp_path / "pickled.pt"
    torch.save({"module": {"x": torch.zeros(1)}, "args": _NotATensor()}, pickled)
    cases = [(junk, "not a valid safetensors file"), (torch_junk, "not a readable torch checkpoint"),
             (wrong, "not an official LayerFlow"), (pickled, "safetensors.torch.save_file"),
             (tmp_path / "missing.pt", "does not exist")]
    for path, words in cases:
        with pytest.raises(ConversionError, match=re.escape(words)) as err:
            load_official_state_dict(path)
        assert "\n" not in str(err.value)
    assert main(["sat2ours", str(junk), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


# ---- the parity tolerance still catches real defects ----------------------------------------------------------
def _official_run(sat_tiny: Path, state_dict: dict[str, torch.Tensor], **config_changes):
    meta = json.loads((sat_tiny / "fixture.json").read_text())
    sd = load_official_state_dict(sat_tiny / "gen_state_dict.safetensors") if state_dict is None else state_dict
    cfg, _ = infer_config(sd, meta["config"], "gen", layernorm_eps=meta["layernorm_eps"])
    from model.convert import build_model, official_inputs

    model = build_model(sd, cfg.replace(**config_changes) if config_changes else cfg)
    args = official_inputs(load_file(str(sat_tiny / "gen_inputs.safetensors")), None)
    return model, args


def _swap_first_two_query_heads(model: LayerFlowTransformer) -> None:
    attn, hd = model.transformer_blocks[0].attn1, model.layerflow_config.attention_head_dim
    with torch.no_grad():
        for p in (attn.to_q.weight, attn.to_q.bias):
            p[: 2 * hd] = torch.cat([p[hd: 2 * hd], p[:hd]]).clone()


@pytest.mark.parametrize("defect", ["layernorm_eps_x10", "swapped_head", "lora_on_wrong_block"])
def test_the_parity_tolerance_fails_real_defects(sat_tiny, defect):
    reference = load_file(str(sat_tiny / "gen_outputs.safetensors"))
    key = "variant.lora_only_layers_mod6_eq5" if defect == "lora_on_wrong_block" else "output"
    if defect == "lora_on_wrong_block":
        # The reference keeps the LoRA of block 5 only; the defect keeps block 4's instead.
        sd = load_official_state_dict(sat_tiny / "gen_state_dict.safetensors")
        keep = "transformer.layers.4."
        sd = {k: v if k.startswith(keep) or not re.search(r"matrix_[BD]\.", k) else torch.zeros_like(v)
              for k, v in sd.items()}
        model, args = _official_run(sat_tiny, sd)
    elif defect == "layernorm_eps_x10":
        meta = json.loads((sat_tiny / "fixture.json").read_text())
        eps = meta["layernorm_eps"]["transformer.layers.*.input_layernorm"]
        model, args = _official_run(sat_tiny, None, norm_eps=10 * eps)
    else:
        model, args = _official_run(sat_tiny, None)
        _swap_first_two_query_heads(model)
    with torch.no_grad():
        diff = (model(**args) - reference[key]).abs().max().item()
    assert diff > parity_tolerance(reference[key]), f"{defect}: {diff:.3e} passes the tolerance"
