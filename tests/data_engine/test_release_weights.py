"""The full perception preset on weight files laid out as their releases ship them (tests/release_layout/perception.py,
tiny configurations): `weights check` and the loaders agree, every file round-trips exactly into the model its
builder makes, the architecture comes from the file (the release files give the released architectures), a wrong
file fails in one line naming it, and infra/configs/engine/perception_full.yaml runs end to end on the tree."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from release_layout import perception
from safetensors.torch import load_file, save_file

from data_engine.stages import models, sd_inpaint
from data_engine.weights import REGISTRY_DIR, missing_files, spec
from model.numerics import assert_float32_close

REPO = Path(__file__).resolve().parents[2]
PERCEPTION = list(yaml.safe_load((REGISTRY_DIR / "perception.yaml").read_text()))
ENTRIES = [*PERCEPTION, models.CLIP_WEIGHTS]
CLIP_FRAMES, CLIP_SIDE = 4, 128  # ProPainter's RAFT needs >= 128 px on each side


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("perception_release")
    perception.build(root)
    return root


@pytest.fixture
def weights(tree, monkeypatch) -> Path:
    monkeypatch.setenv("LAYERFLOW_WEIGHTS", str(tree))
    return tree


def file_of(root: Path, name: str, filename: str) -> Path:
    return root / spec(name).subdir / filename


def assert_same_tensors(loaded: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> None:
    """Loading is a copy: same keys, dtypes and values, bit for bit."""
    assert sorted(loaded) == sorted(saved)
    for key, tensor in saved.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key].cpu(), tensor), key


def hub_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a transformers folder, single file or sharded by its index."""
    index = folder / "model.safetensors.index.json"
    if not index.exists():
        return load_file(folder / "model.safetensors")
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        out.update(load_file(folder / shard))
    return out


# What fixes a computation besides the module tree and the tensor shapes: attributes no state dict or repr holds.
COMPUTE_ATTRS = ("num_heads", "window_size", "use_rel_pos", "corr_radius", "hidden_dim", "context_dim", "iters",
                 "in_normalize")


def assert_same_architecture(ours: torch.nn.Module, reference: torch.nn.Module) -> None:
    def attrs(module: torch.nn.Module) -> list[tuple[str, str, object]]:
        return [(n, a, getattr(m, a)) for n, m in module.named_modules() for a in COMPUTE_ATTRS if hasattr(m, a)]

    assert repr(ours) == repr(reference)
    assert models.shapes_of(ours.state_dict()) == models.shapes_of(reference.state_dict())
    assert attrs(ours) == attrs(reference)


# ---------------------------------------------------------------- the tree and `layerflow weights check`

def test_weights_check_finds_every_perception_entry_complete(tree):
    assert {name: missing_files(name, tree) for name in ENTRIES} == {name: [] for name in ENTRIES}


def test_release_files_carry_the_release_key_names(tree):
    sam = torch.load(file_of(tree, models.SAM_WEIGHTS, models.SAM_FILE), weights_only=True)
    assert {"image_encoder.blocks.0.attn.qkv.weight", "prompt_encoder.mask_downscaling.0.weight",
            "mask_decoder.iou_token.weight"} <= set(sam)
    clip = load_file(file_of(tree, models.CLIP_WEIGHTS, models.CLIP_FILE))
    assert {"visual.conv1.weight", "visual.transformer.resblocks.0.attn.in_proj_weight", "token_embedding.weight",
            "text_projection", "logit_scale"} <= set(clip)
    qwen = tree / spec(models.QWEN_WEIGHTS).subdir
    index = json.loads((qwen / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(index.values())) > 1  # sharded, like the 7B release
    assert {"model.embed_tokens.weight", "visual.patch_embed.proj.weight", "lm_head.weight"} <= set(index)
    assert json.loads((qwen / "chat_template.json").read_text())["chat_template"] == perception.QWEN_CHAT_TEMPLATE
    raft = torch.load(file_of(tree, models.PROPAINTER_WEIGHTS, models.PROPAINTER_FILES["raft"]), weights_only=True)
    assert {"update_block.gru.horizontal_gru.conv_z.conv.weight", "update_block.mask.conv2.weight",
            "cnet.features.init_block.bn.running_var"} <= set(raft)


# ---------------------------------------------------------------- every full builder reads its files exactly

def test_clip_loads_its_file_exactly(weights):
    bundle = models.build_clip("full")
    assert_same_tensors(bundle.model.state_dict(), load_file(file_of(weights, models.CLIP_WEIGHTS, models.CLIP_FILE)))
    assert bundle.tokenizer(["a photo of a dog."]).shape == (1, 77)
    assert bundle.preprocess.transforms[1].size == (224, 224)


def test_sam_loads_its_file_exactly(weights):
    predictor = models.build_sam("full")
    saved = torch.load(file_of(weights, models.SAM_WEIGHTS, models.SAM_FILE), weights_only=True)
    assert_same_tensors(predictor.model.state_dict(), saved)
    assert predictor.transform.target_length == 1024


def test_propainter_parts_load_their_files_exactly(weights):
    modules = models.build_propainter("full")
    for part, module in zip(("raft", "rfc", "pp"), modules):
        path = file_of(weights, models.PROPAINTER_WEIGHTS, models.PROPAINTER_FILES[part])
        saved = torch.load(path, weights_only=True)
        assert_same_tensors(module.state_dict(), saved)
    raft = modules[0]
    assert (raft.iters, raft.in_normalize) == (20, False)  # what the streaming sequencer needs


@pytest.mark.parametrize("name,build", [
    (models.GDINO_WEIGHTS, lambda: models.build_grounding_dino("full")),
    (models.SAM2_WEIGHTS, lambda: models.build_sam2_video("full")),
    (models.SAM3_WEIGHTS, lambda: models.build_sam3_video("full")),
    (models.QWEN_WEIGHTS, lambda: models.build_qwen_vl("full")),
    (models.QWEN3_WEIGHTS, lambda: models.build_qwen_vl("full", "qwen3-vl")),
], ids=[models.GDINO_WEIGHTS, models.SAM2_WEIGHTS, models.SAM3_WEIGHTS, models.QWEN_WEIGHTS, models.QWEN3_WEIGHTS])
def test_transformers_models_round_trip_their_folders(name, build, weights, tmp_path):
    # transformers renames keys on load and back on save, so the round trip compares file to re-saved file.
    model, _ = build()
    model.save_pretrained(tmp_path)
    assert_same_tensors(hub_tensors(tmp_path), hub_tensors(weights / spec(name).subdir))


def test_sam3_from_the_release_folder_tracks_as_the_model_written_there(weights):
    """Known answer: the full preset's SAM 3, model and processor (CLIP tokenizer included) read from the release
    folder, finds and tracks the same objects with the same mask logits as the model the folder was written from."""
    from data_engine.stages.sam3_track import configure, sam3_masklets

    frames = np.full((4, 64, 64, 3), 40, np.uint8)
    for t in range(4):
        frames[t, 20:40, 8 + 4 * t:28 + 4 * t] = (230, 60, 60)
    found = []
    for model, processor in (models.build_sam3_video("full"), perception.written_sam3()):
        configure(model, 4, 0.0, 0.0)  # random weights score low: let every detection start an object
        found.append(sam3_masklets(model, processor, frames, ["red square", "box"], "cpu", torch.float32))
    ours, theirs = found
    assert theirs and [(m.obj_id, m.prompt, sorted(m.logits)) for m in ours] == \
        [(m.obj_id, m.prompt, sorted(m.logits)) for m in theirs]
    for mine, written in zip(ours, theirs):
        for f, logits in written.logits.items():
            assert_float32_close(mine.logits[f], logits, ulps=16, what=f"SAM 3 object {written.obj_id} frame {f}")


def test_sd_inpaint_loads_its_diffusers_folders_exactly(weights, tmp_path):
    pipe = sd_inpaint.build_sd_inpaint("full")
    folder = weights / spec(sd_inpaint.SD_INPAINT_WEIGHTS).subdir
    for part in ("unet", "vae"):
        saved = load_file(folder / part / "diffusion_pytorch_model.safetensors")
        assert_same_tensors(getattr(pipe, part).state_dict(), saved)
    pipe.text_encoder.save_pretrained(tmp_path)  # transformers may rename keys on load: compare re-saved files
    assert_same_tensors(hub_tensors(tmp_path), hub_tensors(folder / "text_encoder"))
    assert pipe.unet.config.in_channels == 9 and pipe.vae_scale_factor == 8  # the release's inpainting geometry
    assert type(pipe.scheduler).__name__ == "PNDMScheduler" and pipe.scheduler.config.steps_offset == 1
    text = "an empty street, no person!"
    assert pipe.tokenizer(text).input_ids == sd_inpaint.tiny_clip_tokenizer()(text).input_ids
    assert (pipe.tokenizer.pad_token, pipe.tokenizer.model_max_length) == ("!", 77)


def test_processors_are_the_release_files(weights):
    _, gdino = models.build_grounding_dino("full")
    vocab = (weights / spec(models.GDINO_WEIGHTS).subdir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert gdino.tokenizer.convert_ids_to_tokens(list(range(len(vocab)))) == vocab
    assert gdino.image_processor.size["shortest_edge"] == 96  # from preprocessor_config.json, not the class default
    _, qwen = models.build_qwen_vl("full")
    assert qwen.chat_template == perception.QWEN_CHAT_TEMPLATE
    assert qwen.video_processor.size["longest_edge"] == qwen.image_processor.size["longest_edge"] == 112 * 112
    prompt = qwen.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                                      add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    _, qwen3 = models.build_qwen_vl("full", "qwen3-vl")
    assert qwen3.chat_template == perception.QWEN3_CHAT_TEMPLATE
    assert type(qwen3.video_processor).__name__ == "Qwen3VLVideoProcessor"  # from video_preprocessor_config.json
    assert qwen3.video_processor.size["longest_edge"] == qwen3.image_processor.size["longest_edge"] == 128 * 128
    assert qwen3.image_processor.patch_size == 16
    prompt = qwen3.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                                       add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"  # no default system turn


def test_qwen3_vl_from_the_release_folder_answers_as_the_model_written_there(weights):
    """Known answer: the full preset's Qwen3-VL, read from the sharded release folder, gives the logits of the model
    the folder was written from, on an image and a video through the release's processor files."""
    from transformers.video_utils import VideoMetadata

    model, processor = models.build_qwen_vl("full", "qwen3-vl", dtype="float32")
    # The written weights in float32; a cast of the whole bfloat16 model would also round its rotary buffers.
    written, _ = models.build_qwen_vl("tiny", "qwen3-vl", dtype="float32")
    written.load_state_dict(perception.written_qwen("qwen3-vl")[0].state_dict())
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (96, 128, 3), generator=g, dtype=torch.uint8).numpy()
    video = torch.randint(0, 256, (4, 64, 96, 3), generator=g, dtype=torch.uint8).numpy()
    text = processor.apply_chat_template([{"role": "user", "content": [
        {"type": "image"}, {"type": "video"}, {"type": "text", "text": "Describe the video in detail."}]}],
        add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[image], videos=[video], return_tensors="pt", videos_kwargs={
        "do_sample_frames": False,
        "video_metadata": [VideoMetadata(total_num_frames=8, fps=8.0, frames_indices=[0, 2, 5, 7])]})
    with torch.inference_mode():
        ours, theirs = model(**inputs).logits, written(**inputs).logits
    assert_float32_close(ours, theirs, ulps=16, what="Qwen3-VL logits, loaded vs written")
    assert float(theirs.std()) > 0  # the random model's answer is not a constant


# ---------------------------------------------------------------- the architecture is the file's

def test_tiny_files_give_the_architecture_they_were_written_with(tree):
    def shapes(name: str, filename: str) -> dict[str, tuple[int, ...]]:
        path = file_of(tree, name, filename)
        return models.shapes_of(models.read_state_dict(path))

    assert models.clip_arch(shapes(models.CLIP_WEIGHTS, models.CLIP_FILE)) == models.ClipArch(
        embed_dim=768, image_size=224, patch_size=14, vision_width=64, vision_layers=2, vision_mlp_ratio=4.0,
        context_length=77, vocab_size=49408, text_width=64, text_layers=1, text_mlp_ratio=4.0)
    sam = models.sam_arch(shapes(models.SAM_WEIGHTS, models.SAM_FILE))
    assert (sam.embed_dim, sam.depth, sam.num_heads, sam.global_attn_indexes) == (48, 3, 3, (2,))
    assert (sam.img_size, sam.window_size, sam.out_chans, sam.decoder_heads) == (1024, 14, 256, 8)
    from pytorchcv.models.raft import SepConvGRU

    raft = models.raft_arch(shapes(models.PROPAINTER_WEIGHTS, models.PROPAINTER_FILES["raft"]))
    assert raft == {**perception.TINY_RAFT, "gru_class": SepConvGRU}
    pp = models.propainter_arch(shapes(models.PROPAINTER_WEIGHTS, models.PROPAINTER_FILES["pp"]))
    assert pp == {"channels": 128, **perception.TINY_PROPAINTER, "t2t_kernel_size": (7, 7), "pool_size": (4, 4)}


def test_sam_vit_h_shapes_give_vit_h():
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        vit_h = sam_model_registry["vit_h"]()
        arch = models.sam_arch(models.shapes_of(vit_h.state_dict()))
        ours = models.sam_from_arch(arch)
    assert (arch.embed_dim, arch.depth, arch.num_heads, arch.global_attn_indexes) == (1280, 32, 16, (7, 15, 23, 31))
    assert (arch.img_size, arch.patch_size, arch.window_size, arch.out_chans) == (1024, 16, 14, 256)
    assert_same_architecture(ours, vit_h)


def test_clip_vit_l14_shapes_give_the_openai_vit_l14():
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    with torch.device("meta"):  # what open_clip.create_model(CLIP_ARCH) builds, without its 7 s
        reference = open_clip.CLIP(**open_clip.get_model_config(models.CLIP_ARCH))
        arch = models.clip_arch(models.shapes_of(reference.state_dict()))
        ours = models.clip_from_arch(arch)
    assert arch == models.ClipArch(embed_dim=768, image_size=224, patch_size=14, vision_width=1024, vision_layers=24,
                                   vision_mlp_ratio=4.0, context_length=77, vocab_size=49408, text_width=768,
                                   text_layers=12, text_mlp_ratio=4.0)
    assert_same_architecture(ours, reference)
    # open_clip's own transform for a model loaded from a local file (its default preprocessing at the model's size)
    assert repr(open_clip.image_transform(ours.visual.image_size, is_train=False)) == repr(
        image_transform_v2(PreprocessCfg(size=reference.visual.image_size), is_train=False))


def test_raft_things_and_propainter_shapes_give_the_release_modules():
    from pytorchcv.models.propainter import propainter
    from pytorchcv.models.raft import raft_small, raft_things

    for release in (raft_things, raft_small):
        with torch.device("meta"):
            reference = release(in_normalize=False, iters=20)
            ours = models.raft_from_arch(models.raft_arch(models.shapes_of(reference.state_dict())))
        assert_same_architecture(ours, reference)
    reference = propainter()  # its attention computes index buffers at init: not on the meta device
    arch = models.propainter_arch(models.shapes_of(reference.state_dict()))
    assert (arch["hidden_dim"], arch["num_heads"], arch["depth"]) == (512, 4, 8)
    assert_same_architecture(models.propainter_from_arch(arch), reference)


# ---------------------------------------------------------------- a wrong file fails in one line naming it

def corrupt_state(path: Path, change) -> None:
    state = torch.load(path, weights_only=True) if path.suffix == ".pth" else load_file(path)
    change(state)
    if path.suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, path)


def drop(key: str):
    return lambda state: state.pop(key)


def reshape(key: str, shape: tuple[int, ...]):
    return lambda state: state.__setitem__(key, torch.zeros(shape))


def add(key: str):
    return lambda state: state.__setitem__(key, torch.zeros(1))


def nest(state: dict) -> None:
    inner = dict(state)
    state.clear()
    state["model"] = inner


def shard_of(key: str):
    return lambda folder: json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"][key]


BAD_FILES = {
    "sam-missing-key": (models.SAM_WEIGHTS, models.SAM_FILE, drop("image_encoder.neck.1.bias"),
                        lambda: models.build_sam("full"), "1 missing key(s), first image_encoder.neck.1.bias"),
    "sam-wrong-shape": (models.SAM_WEIGHTS, models.SAM_FILE,
                        reshape("image_encoder.blocks.0.attn.proj.weight", (48, 7)), lambda: models.build_sam("full"),
                        "shape mismatch(es), first image_encoder.blocks.0.attn.proj"),
    "sam-nested": (models.SAM_WEIGHTS, models.SAM_FILE, nest, lambda: models.build_sam("full"), "'model' holds a dict"),
    "clip-not-clip": (models.CLIP_WEIGHTS, models.CLIP_FILE, drop("visual.conv1.weight"),
                      lambda: models.build_clip("full"), "no key 'visual.conv1.weight'"),
    "raft-extra-key": (models.PROPAINTER_WEIGHTS, models.PROPAINTER_FILES["raft"], add("update_block.extra"),
                       lambda: models.build_propainter("full"), "1 unexpected key(s), first update_block.extra"),
    "propainter-wrong-shape": (models.PROPAINTER_WEIGHTS, models.PROPAINTER_FILES["pp"],
                               reshape("sc.bias_conv.bias", (3,)), lambda: models.build_propainter("full"),
                               "sc.bias_conv.bias (3,) vs (128,)"),
    "gdino-missing-key": (models.GDINO_WEIGHTS, "model.safetensors", drop("model.enc_output_norm.weight"),
                          lambda: models.build_grounding_dino("full"), "missing key(s)"),
    "sam3-missing-key": (models.SAM3_WEIGHTS, "model.safetensors", drop("tracker_neck.fpn_layers.0.proj1.bias"),
                         lambda: models.build_sam3_video("full"), "1 missing key(s), first tracker_neck.fpn_layers.0"),
    "qwen-wrong-shape": (models.QWEN_WEIGHTS, shard_of("lm_head.weight"), reshape("lm_head.weight", (3,)),
                         lambda: models.build_qwen_vl("full"), "1 shape mismatch(es), first lm_head.weight (3,) vs"),
    "qwen3-missing-key": (models.QWEN3_WEIGHTS, shard_of("model.visual.deepstack_merger_list.0.norm.weight"),
                          drop("model.visual.deepstack_merger_list.0.norm.weight"),
                          lambda: models.build_qwen_vl("full", "qwen3-vl"),
                          "1 missing key(s), first model.visual.deepstack_merger_list.0.norm.weight"),
    "sd-unet-missing-key": (sd_inpaint.SD_INPAINT_WEIGHTS, "unet/diffusion_pytorch_model.safetensors",
                            drop("conv_in.bias"), lambda: sd_inpaint.build_sd_inpaint("full"),
                            "1 missing key(s), first conv_in.bias"),
    "sd-vae-wrong-shape": (sd_inpaint.SD_INPAINT_WEIGHTS, "vae/diffusion_pytorch_model.safetensors",
                           reshape("encoder.conv_in.bias", (3,)), lambda: sd_inpaint.build_sd_inpaint("full"),
                           "1 shape mismatch(es), first encoder.conv_in.bias (3,) vs (8,)"),
}
# errors name the folder
FOLDER_LOADERS = (models.GDINO_WEIGHTS, models.SAM3_WEIGHTS, models.QWEN_WEIGHTS, models.QWEN3_WEIGHTS,
                  sd_inpaint.SD_INPAINT_WEIGHTS)


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_wrong_file_fails_in_one_line_naming_it(case, tree, tmp_path, monkeypatch):
    name, filename, change, build, says = BAD_FILES[case]
    folder = tmp_path / spec(name).subdir
    shutil.copytree(tree / spec(name).subdir, folder)
    path = folder / (filename(folder) if callable(filename) else filename)
    corrupt_state(path, change)
    monkeypatch.setenv("LAYERFLOW_WEIGHTS", str(tmp_path))
    with pytest.raises(models.WeightsFormatError) as info:
        build()
    message = str(info.value)
    assert "\n" not in message and says in message
    assert str(folder if name in FOLDER_LOADERS else path) in message


def test_a_file_that_is_not_a_checkpoint_is_named(tree, tmp_path, monkeypatch):
    folder = tmp_path / spec(models.PROPAINTER_WEIGHTS).subdir
    shutil.copytree(tree / spec(models.PROPAINTER_WEIGHTS).subdir, folder)
    (folder / models.PROPAINTER_FILES["rfc"]).write_bytes(b"<html>rate limited</html>")
    monkeypatch.setenv("LAYERFLOW_WEIGHTS", str(tmp_path))
    with pytest.raises(models.WeightsFormatError, match="not a readable state dict") as info:
        models.build_propainter("full")
    assert str(folder / models.PROPAINTER_FILES["rfc"]) in str(info.value) and "\n" not in str(info.value)


def test_a_scheduler_config_that_names_no_scheduler_is_refused(tree, tmp_path, monkeypatch):
    folder = tmp_path / spec(sd_inpaint.SD_INPAINT_WEIGHTS).subdir
    shutil.copytree(tree / spec(sd_inpaint.SD_INPAINT_WEIGHTS).subdir, folder)
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "StableDiffusionInpaintPipeline"}))
    monkeypatch.setenv("LAYERFLOW_WEIGHTS", str(tmp_path))
    with pytest.raises(models.WeightsFormatError, match="is not a diffusers scheduler") as info:
        sd_inpaint.build_sd_inpaint("full")
    assert str(config) in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- the two entries that cannot load here

def test_ram_plus_file_is_in_place_but_needs_the_ram_package(weights, monkeypatch):
    (filename,) = spec(models.RAM_WEIGHTS).files
    checkpoint = torch.load(file_of(weights, models.RAM_WEIGHTS, filename), weights_only=True)
    prefixes = {k.split(".", 1)[0] for k in checkpoint["model"]}  # ram's loader reads checkpoint["model"]
    assert prefixes == {"visual_encoder", "image_proj", "label_embed", "tagging_head", "wordvec_proj", "fc",
                        "reweight_scale"}
    assert checkpoint["model"]["label_embed"].shape[0] == len(models.tag_list()) * perception.RAM_DESCRIPTIONS
    monkeypatch.setitem(sys.modules, "ram", None)  # the git-only package is not installable here
    monkeypatch.setitem(sys.modules, "ram.models", None)
    with pytest.raises(models.MissingPackageError, match="recognize-anything"):
        models.build_ram("full")


def test_cogvlm2_folder_is_complete_but_its_remote_code_is_refused(weights):
    folder = weights / spec(models.COGVLM2_WEIGHTS).subdir
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["CogVLMVideoForCausalLM"]
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_cogvlm.CogVLMVideoForCausalLM"
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    assert all((folder / shard).is_file() for shard in weight_map.values())
    with pytest.raises(models.RemoteCodeNotAllowed, match="trust_remote_code: true"):
        models.build_cogvlm2(trust_remote_code=False)


# ---------------------------------------------------------------- perception_full.yaml end to end

# Only what a CPU, one clip and random tiny weights need: no GPU share; one actor (each actor of the fused pool loads
# every model); permissive tag/box/dedup filters (random models spread their scores); yes/no-constrained decoding
# kept as a recorded verdict; short captions that cannot be empty.
E2E_SETTINGS = [
    f"clip.num_frames={CLIP_FRAMES}", f"clip.height={CLIP_SIDE}", f"clip.width={CLIP_SIDE}",
    *(f"stages.{stage}.num_gpus=0" for stage in ("tag", "segment", "fg_check", "inpaint", "caption")),
    "stages.tag.max_actors=1", "stages.tag.options.min_score=0",
    "stages.segment.options.box_threshold=0", "stages.segment.options.text_threshold=0",
    "stages.dedup.options.min_area=0", "stages.dedup.options.max_area=1", "stages.dedup.options.max_missing=1",
    "stages.fg_check.options.constrain_answer=true", "stages.fg_check.options.on_reject=keep",
    "stages.caption.options.max_new_tokens=8", "stages.caption.options.min_new_tokens=4",
]


def test_perception_full_config_runs_end_to_end_on_the_release_tree(weights, tmp_path):
    from data_engine.cli import main
    from data_engine.shards import read_clips
    from data_engine.sources.synthetic_videos import write_synthetic_video
    from data_engine.synthetic import SyntheticConfig

    videos, out = tmp_path / "videos", tmp_path / "out"
    write_synthetic_video(SyntheticConfig(num_clips=1, num_frames=CLIP_FRAMES, height=CLIP_SIDE, width=CLIP_SIDE),
                          0, videos)
    args = ["dataset", "--config", str(REPO / "infra/configs/engine/perception_full.yaml"), "--input", str(videos),
            "--out", str(out), "--no-progress"]
    assert main([*args, *(a for s in E2E_SETTINGS for a in ("--set", s))]) == 0

    assert pq.read_table(out / "quarantine.parquet").num_rows == 0
    inputs = json.loads((out / "stats.json").read_text())["engine"]["inputs"]
    assert (inputs["total"], inputs["recorded"], inputs["unfinished"], inputs["status"]) == (1, 1, 0, {"ok": 1})
    clips = list(read_clips(out))
    assert clips and len(clips) == pq.read_table(out / "manifest.parquet").num_rows
    for clip in clips:
        assert clip.origin == "engine" and clip.num_frames == CLIP_FRAMES and clip.height == CLIP_SIDE
        assert all(clip.captions.as_dict().values())
        assert clip.scores["tag"]["backend"] == "clip" and clip.scores["caption"]["backend"] == "qwen2.5-vl"
        assert clip.scores["segment"]["tag"] in models.tag_list()
        assert clip.scores["fg_check"]["verdict"] in ("yes", "no")
