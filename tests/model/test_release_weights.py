"""The generation model read from files laid out as its releases ship them (tests/release_layout/model.py): an
official SAT/DeepSpeed checkpoint converted and checked against the official forward, assembled with the
CogVideoX-2B diffusers release into a pipeline folder, and generated from with the full-size config."""
from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from diffusers import CogVideoXDPMScheduler
from release_layout import model as release_layout
from safetensors.torch import load_file
from transformers import T5Config, T5EncoderModel

from data_engine.schema import Captions
from data_engine.video_io import decode_video
from data_engine.weights import missing_files
from model.convert import (
    ConversionError,
    convert_state_dict,
    load_official_state_dict,
    main,
    official_inputs,
    parity_tolerance,
    sat_safe_globals,
)
from model.generate import main as generate_main
from model.generate import parse_args, pipeline_for
from model.layout import task_spec
from model.official_sampler import OfficialDPMScheduler
from model.pipeline import LayerFlowPipeline
from model.text import MAX_PROMPT_TOKENS
from model.transformer import LayerFlowTransformer

REPO = Path(__file__).resolve().parents[2]
LATENT = "4x6"  # the fixture's latent size: the release checkpoints' 60x90, shrunk
CKPT_FILE = f"{release_layout.SAT_ITERATION}/mp_rank_00_model_states.pt"


@pytest.fixture(scope="module")
def release(release_weights) -> Path:
    return release_weights


def official(release: Path, run: str) -> Path:
    return release / release_layout.LAYERFLOW_DIR / release_layout.OFFICIAL[run]


@pytest.fixture(scope="module")
def pipeline_dir(release, sat_tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("layerflow-generation")
    assert main(["sat2ours", str(official(release, "gen")), str(out), "--latent-size", LATENT,
                 "--base", str(release / "cogvideox-2b")]) == 0
    return out


def test_the_cogvideox_release_layout(release):
    root = release / "cogvideox-2b"
    assert missing_files("cogvideox-2b", release) == []
    index = json.loads((root / "text_encoder" / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == ["model-00001-of-00002.safetensors",
                                                        "model-00002-of-00002.safetensors"]
    assert not (root / "tokenizer" / "tokenizer.json").exists()  # the release's tokenizer is spiece.model alone
    weights = [load_file(str(p)) for p in root.rglob("*.safetensors")]
    assert {t.dtype for w in weights for t in w.values()} == {torch.float16}


# ---- the SAT/DeepSpeed file --------------------------------------------------------------------------------
def test_the_sat_checkpoint_loads_with_weights_only_and_the_sat_allow_list(release, sat_tiny, tmp_path):
    path = official(release, "gen") / CKPT_FILE
    with pytest.raises(pickle.UnpicklingError, match="numpy"):  # its NumPy RNG state needs the allow-list
        torch.load(path, weights_only=True)
    with torch.serialization.safe_globals(sat_safe_globals()):
        state = torch.load(path, weights_only=True)
    assert state["iteration"] == 1000 and state["np_rng_state"][0] == "MT19937"
    assert state["module"]["model.diffusion_model.mixins.patch_embed.proj.weight"].shape == (64, 16, 2, 2)
    # NumPy 1.x names the array constructor numpy.core.multiarray: such a file loads too.
    legacy = _renamed_global(path, tmp_path / "legacy.pt", b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert set(load_official_state_dict(legacy)) == set(load_file(str(sat_tiny / "gen_state_dict.safetensors")))


def test_objects_outside_the_allow_list_are_refused_in_one_line(tmp_path):
    import argparse

    path = tmp_path / "with_args.pt"
    torch.save({"module": {"model.diffusion_model.x": torch.zeros(1)}, "args": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(ConversionError, match=r"holds argparse\.Namespace, which an official SAT") as err:
        load_official_state_dict(path)
    assert "\n" not in str(err.value)


def _renamed_global(src: Path, dst: Path, old: bytes, new: bytes) -> Path:
    """A copy of a torch zip file whose pickle names a global differently (protocol 2 names are plain text)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, data.replace(old, new) if info.filename.endswith("data.pkl") else data)
    return dst


# ---- conversion against the official forward ----------------------------------------------------------------
@pytest.mark.parametrize("run", ["gen", "fg2bg"])
def test_sat2ours_on_the_released_folder_matches_the_official_forward(release, sat_tiny, tmp_path, run, capsys):
    out = tmp_path / "converted"
    assert main(["sat2ours", str(official(release, run)), str(out), "--latent-size", LATENT]) == 0
    assert release_layout.OFFICIAL[run] in capsys.readouterr().out  # the variant, told by the hub folder name
    model = LayerFlowTransformer.from_pretrained(str(out)).eval()
    # The weights are the fixture's, renamed: nothing from the rest of the DeepSpeed file leaked in.
    expected = convert_state_dict(load_file(str(sat_tiny / f"{run}_state_dict.safetensors")), model.layerflow_config)
    got = model.state_dict()
    assert set(got) == set(expected) and all(torch.equal(got[k], v) for k, v in expected.items())
    meta = json.loads((sat_tiny / "fixture.json").read_text())
    inputs = load_file(str(sat_tiny / f"{run}_inputs.safetensors"))
    reference = load_file(str(sat_tiny / f"{run}_outputs.safetensors"))["output"]
    with torch.no_grad():
        ours = model(**official_inputs(inputs, meta["non_tensor_inputs"][run].get("task_idx")))
    assert (ours - reference).abs().max().item() <= parity_tolerance(reference)


# ---- a pipeline folder: converted transformer + the CogVideoX-2B release -----------------------------------
def test_the_assembled_folder_loads_the_release_parts(release, sat_tiny, pipeline_dir):
    base = release / "cogvideox-2b"
    pipe = LayerFlowPipeline.from_pretrained(pipeline_dir)
    assert {m.dtype for m in (pipe.vae, pipe.text_encoder, pipe.transformer)} == {torch.float32}
    official_dit = load_file(str(sat_tiny / "gen_state_dict.safetensors"))
    assert torch.equal(pipe.transformer.patch_embed.proj.weight, official_dit["mixins.patch_embed.proj.weight"])
    vae = load_file(str(base / "vae" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(pipe.vae.state_dict()[k], v.float()) for k, v in vae.items())
    assert isinstance(pipe.scheduler, OfficialDPMScheduler)  # the official sampler, not the release's DDIM
    # Both T5 shards were read: every weight equals the shards' tensors.
    shard_files = sorted((base / "text_encoder").glob("model-*.safetensors"))
    shards = {k: v for p in shard_files for k, v in load_file(str(p)).items()}
    t5 = pipe.text_encoder.state_dict()
    assert all(torch.equal(t5[k], v.float()) for k, v in shards.items())
    # Prompt embeddings equal T5 run by hand on SentencePiece's own ids: the release tokenizer and T5 in use.
    captions = Captions("a dog", "a park", "a dog in a park")
    embeds = pipe.encode_prompt([captions], "generate")
    assert torch.equal(embeds, _encode_by_hand(base, shards, ["0, a dog", "1, a park", "2, a dog in a park"]))


def _encode_by_hand(base: Path, weights: dict[str, torch.Tensor], prompts: list[str]) -> torch.Tensor:
    sp = spm.SentencePieceProcessor(model_file=str(base / "tokenizer" / "spiece.model"))
    ids = [(sp.encode(p) + [sp.eos_id()] + [sp.pad_id()] * MAX_PROMPT_TOKENS)[:MAX_PROMPT_TOKENS] for p in prompts]
    t5 = T5EncoderModel(T5Config.from_pretrained(base / "text_encoder")).eval()
    missing, unexpected = t5.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
    assert (missing, unexpected) == (["encoder.embed_tokens.weight"], [])  # tied to shared.weight, not saved
    with torch.no_grad():
        return t5(torch.tensor(ids)).last_hidden_state.reshape(1, -1, t5.config.d_model)


def test_a_base_that_does_not_fit_is_refused_in_one_line(release, sat_tiny, tmp_path, capsys):
    base = tmp_path / "wrong-base"
    for part in ("vae", "text_encoder", "tokenizer"):
        (base / part).mkdir(parents=True)
    (base / "vae" / "config.json").write_text(json.dumps({"latent_channels": 16}))
    (base / "text_encoder" / "config.json").write_text(json.dumps({"d_model": 4096}))
    assert main(["sat2ours", str(official(release, "gen")), str(tmp_path / "out"), "--latent-size", LATENT,
                 "--base", str(base)]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: --base .* has T5 width 4096 and 16 latent channels, the checkpoint reads 32 .*\n", err)
    assert not (tmp_path / "out").exists()


def test_generate_with_the_full_config_from_the_assembled_folder(pipeline_dir, tmp_path, capsys):
    config = REPO / "infra" / "configs" / "generate" / "cogvideox-2b.yaml"
    argv = ["--config", str(config), "--model-dir", str(pipeline_dir), "--height", "16", "--width", "24",
            "--frames", "4", "--steps", "2", "--device", "cpu", "--out", str(tmp_path),
            "--fg-prompt", "a dog", "--bg-prompt", "a park", "--blend-prompt", "a dog in a park"]
    assert generate_main(argv) == 0
    folder = tmp_path / "generate"
    assert str(folder) in capsys.readouterr().out
    assert decode_video(folder / "alpha.mp4", grey=True).shape == (4, 16, 24)
    assert decode_video(folder / "bg.mp4").shape == (4, 16, 24, 3)
    assert len(list((folder / "fg_rgba").glob("*.png"))) == 4 and (folder / "fg_rgba.mov").is_file()
    assert json.loads((folder / "clip.json").read_text())["captions"]["blend"] == "a dog in a park"


@pytest.mark.parametrize("flags, sampler", [([], OfficialDPMScheduler), (["--sampler", "dpm"], CogVideoXDPMScheduler)])
def test_generate_samples_a_converted_folder_with_the_official_sampler(pipeline_dir, flags, sampler):
    """The full config leaves the sampler to the folder, whose scheduler/ the converter wrote; --sampler dpm
    picks diffusers' instead."""
    config = REPO / "infra" / "configs" / "generate" / "cogvideox-2b.yaml"
    args = parse_args(["--config", str(config), "--model-dir", str(pipeline_dir), "--device", "cpu",
                       "--dtype", "float32", *flags])
    assert isinstance(pipeline_for(args, task_spec("generate")).scheduler, sampler)
