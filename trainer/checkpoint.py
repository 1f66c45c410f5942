"""Checkpoints without pickle: the trainable weights as safetensors, the rest of the training state as
safetensors + JSON, and the final model in the folder layout `LayerFlowPipeline.from_pretrained` reads.

A checkpoint is a folder (`step=000100.ckpt/`):
    trainable.safetensors   the stage's weights (metadata: stage, run configuration)
    state.safetensors       every other tensor of the Lightning checkpoint (optimizer moments, RNG states, ...)
    state.json              the checkpoint's structure, with references into state.safetensors

Loading reads tensors and JSON only, so a checkpoint cannot run code. Resume is exact: optimizer, LR schedule,
step, loop and callback states (RNG states included, see `RNGStateCallback`) are all in it, and the data stream
is a function of the step (`trainer.data`).
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import CheckpointIO
from safetensors.torch import load_file, save_file

from trainer.components import TRAINABLE_FILE

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
FORMAT = "layerflow-checkpoint-v1"


class CheckpointFormatError(ValueError):
    """A checkpoint folder that is incomplete or holds something this format cannot store."""


def _encode(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    """JSON skeleton of `obj`; tensors (and numpy arrays) move to `tensors` and are referenced by name."""
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().contiguous()
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        name = f"t{len(tensors)}"
        tensors[name] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__ndarray__": name}
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: _encode(v, tensors, f"{where}.{k}") for k, v in obj.items()}}
        # Optimizer states are keyed by int: keep keys with their types.
        return {"__items__": [[_encode(k, tensors, where), _encode(v, tensors, f"{where}[{k!r}]")]
                              for k, v in obj.items()]}
    raise CheckpointFormatError(f"checkpoint entry {where} is a {type(obj).__name__}, which a checkpoint cannot "
                                "store without pickle; keep checkpoint state to tensors, numbers, strings and "
                                "containers")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy()
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj["__dict__"].items()}


def save_trainable(weights: dict[str, torch.Tensor], path: str | Path, *, stage: int, config: dict[str, Any]) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "stage": str(stage), "config": json.dumps(config, sort_keys=True, default=str)}
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(p), metadata=meta)
    return p


class SafetensorsCheckpointIO(CheckpointIO):
    """Lightning checkpoint IO writing the folder format above (Lightning's default would pickle)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        final = Path(path)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        rest = dict(checkpoint)
        weights = rest.pop("state_dict", {})
        hparams = rest.get("hyper_parameters", {})
        save_trainable(weights, tmp / TRAINABLE_FILE, stage=hparams.get("stage", 0), config=hparams)
        tensors: dict[str, torch.Tensor] = {}
        skeleton = _encode(rest, tensors, "checkpoint")
        save_file(tensors, str(tmp / STATE_TENSORS))
        (tmp / STATE_JSON).write_text(json.dumps({"format": FORMAT, "checkpoint": skeleton}))
        # Written under a temporary name and renamed: a crash never leaves a half checkpoint under the real name.
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint(path)

    def remove_checkpoint(self, path) -> None:
        shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    root = Path(path)
    missing = [n for n in (TRAINABLE_FILE, STATE_TENSORS, STATE_JSON) if not (root / n).is_file()]
    if missing:
        raise CheckpointFormatError(f"{root}: not a complete LayerFlow checkpoint (missing {', '.join(missing)})")
    meta = json.loads((root / STATE_JSON).read_text())
    if meta.get("format") != FORMAT:
        raise CheckpointFormatError(f"{root}: checkpoint format {meta.get('format')!r}, expected {FORMAT!r}")
    checkpoint = _decode(meta["checkpoint"], load_file(str(root / STATE_TENSORS)))
    checkpoint["state_dict"] = load_file(str(root / TRAINABLE_FILE))
    return checkpoint


class RNGStateCallback(L.Callback):
    """Saves and restores the process RNGs (torch CPU/CUDA, numpy, python) with each checkpoint."""

    def state_dict(self) -> dict[str, Any]:
        state = {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        np.random.set_state(state["numpy"])
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def export_model(module, out_dir: str | Path) -> Path:
    """The trained model as a `LayerFlowPipeline.from_pretrained` folder, plus the stage's `trainable.safetensors`."""
    from model.pipeline import LayerFlowPipeline
    from model.schedule import make_scheduler

    out = Path(out_dir)
    pipe = LayerFlowPipeline(tokenizer=module.tokenizer, text_encoder=module.text_encoder, vae=module.vae,
                             transformer=module.transformer, scheduler=make_scheduler("dpm"))
    pipe.save_pretrained(out)
    save_trainable(module.trainable_state_dict(), out / TRAINABLE_FILE, stage=module.spec.stage,
                   config=dict(module.hparams))
    return out


class ExportCallback(L.Callback):
    """Exports the final model (rank 0) when training ends."""

    def __init__(self, dirpath: str = "final") -> None:
        self.dirpath = dirpath

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.is_global_zero:
            root = Path(self.dirpath)
            if not root.is_absolute():
                root = Path(trainer.default_root_dir) / root
            export_model(pl_module, root)
