"""Reading layered outputs and DAVIS-layout folders into per-layer arrays.

A sample folder holds each layer as `<layer>.mp4` (what `model.export.export_clip` writes) or as a PNG/JPEG
folder `<layer>/*.png`; the official names `mask` (alpha) and `bl` (blend) are accepted. A clip with K
foregrounds adds fg_k and alpha_k (or mask_k) for k = 1 .. K-1, front first, found without a gap from k = 1.
Captions come from `clip.json` / `meta.json` (`{"captions": {"fg", "bg", "blend", "fg_1", ...}}`) or, for DAVIS
sequences, from any `meta*.json` beside or above them (`{"videos": {seq: {"fg_prompt", "bg_prompt", "bl_prompt"}}}`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_engine.official_layout import OfficialLayoutError, meta_prompts
from data_engine.schema import CAPTIONED_LAYERS, Captions, alpha_name, fg_name, foreground_index, is_alpha, layer_names
from data_engine.video_io import VideoDecodeError, decode_video, probe_video, read_frame_folder
from evaluation.errors import EvaluationError

ALIASES = {"fg": ("fg",), "alpha": ("alpha", "mask"), "bg": ("bg",), "blend": ("blend", "bl")}
META_FILES = ("clip.json", "meta.json")


@dataclass
class LayerSet:
    """The layers one sample has (a subset of fg, alpha, bg, blend, fg_k, alpha_k), all with the same T, H, W."""

    key: str
    layers: dict[str, np.ndarray]
    captions: Captions = field(default_factory=Captions)
    fps: float = 8.0
    source: str = ""

    @property
    def num_frames(self) -> int:
        return next(iter(self.layers.values())).shape[0]

    @property
    def num_foregrounds(self) -> int:
        """1 + the highest k of its fg_k / alpha_k layers (1 without any)."""
        return 1 + max((foreground_index(name) or 0 for name in self.layers), default=0)

    def check(self) -> LayerSet:
        shapes = {name: arr.shape[:3] for name, arr in self.layers.items()}
        if len(set(shapes.values())) > 1:
            desc = ", ".join(f"{n} {s[0]}x{s[1]}x{s[2]}" for n, s in shapes.items())
            raise EvaluationError(f"{self.key}: layers differ in frames x height x width ({desc}); they must match")
        return self


def aliases(layer: str) -> tuple[str, ...]:
    """The file names a layer may have: the official ones for the paper's four, mask_k beside alpha_k."""
    if layer in ALIASES:
        return ALIASES[layer]
    return (layer, "mask" + layer[len("alpha"):]) if is_alpha(layer) else (layer,)


def has_layer(folder: Path, layer: str) -> bool:
    return any((folder / f"{a}.mp4").is_file() or (folder / a).is_dir() for a in aliases(layer))


def folder_foregrounds(folder: Path) -> int:
    """K: 1 + how many of fg_1 / alpha_1, fg_2 / alpha_2, ... the folder holds, counted from k = 1 up to the
    first k with neither."""
    k = 1
    while has_layer(folder, fg_name(k)) or has_layer(folder, alpha_name(k)):
        k += 1
    return k


def read_layer(folder: Path, layer: str) -> tuple[np.ndarray, float | None] | None:
    """(frames, fps or None) of one layer in a sample folder, or None if the folder lacks it."""
    grey = is_alpha(layer)
    for name in aliases(layer):
        video = folder / f"{name}.mp4"
        if video.is_file():
            try:
                return decode_video(video, grey=grey), probe_video(video).fps
            except VideoDecodeError as exc:
                raise EvaluationError(str(exc)) from exc
        frames_dir = folder / name
        if frames_dir.is_dir():
            try:
                return read_frame_folder(frames_dir, grey=grey), None
            except VideoDecodeError as exc:
                raise EvaluationError(str(exc)) from exc
    return None


def _extra_fg(name: str) -> bool:
    return bool(foreground_index(name)) and not is_alpha(name)


def _captions_from_meta(folder: Path) -> Captions | None:
    for name in META_FILES:
        path = folder / name
        if path.is_file():
            try:
                caps = json.loads(path.read_text()).get("captions", {})
            except (json.JSONDecodeError, AttributeError) as exc:
                raise EvaluationError(f"{path}: not valid json ({exc})") from exc
            # Captions of layers this reader does not know (older or newer writers) are ignored, as before.
            known = {k: str(v).strip() for k, v in caps.items() if k in CAPTIONED_LAYERS or _extra_fg(k)}
            try:
                return Captions.from_dict(known)
            except ValueError as exc:
                raise EvaluationError(f"{path}: {exc}") from exc
    return None


def davis_captions(seq_dir: Path) -> Captions:
    """Prompts of a DAVIS-layout sequence from `meta*.json` in its parent or grandparent folder."""
    try:
        return meta_prompts(seq_dir.name, (seq_dir.parent, seq_dir.parent.parent))
    except OfficialLayoutError as exc:
        raise EvaluationError(str(exc)) from exc


def read_sample(folder: str | Path, *, key: str | None = None, fps: float = 8.0,
                layers: tuple[str, ...] | None = None) -> LayerSet:
    """The layers of one sample folder: `layers`, or by default every layer of its K foregrounds it holds."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: not a folder of layered outputs")
    layers = layers or layer_names(folder_foregrounds(folder))
    found: dict[str, np.ndarray] = {}
    video_fps = None
    for layer in layers:
        got = read_layer(folder, layer)
        if got is not None:
            found[layer], layer_fps = got
            video_fps = video_fps or layer_fps
    if not found:
        names = ", ".join(f"{a}.mp4 or {a}/" for layer in layers for a in aliases(layer))
        raise EvaluationError(f"{folder}: holds no layer; expected some of {names}")
    captions = _captions_from_meta(folder) or davis_captions(folder)
    return LayerSet(key or folder.name, found, captions, video_fps or fps, str(folder)).check()


def is_sample_dir(folder: Path) -> bool:
    return any((folder / f"{a}.mp4").is_file() or (folder / a).is_dir() for names in ALIASES.values() for a in names)


def find_samples(root: str | Path) -> list[Path]:
    """Sample folders under root (root itself if it is one), sorted; DAVIS sequences are found at any depth."""
    root = Path(root)
    if not root.is_dir():
        raise EvaluationError(f"{root}: not a folder; pass the folder that holds the layered outputs")
    if is_sample_dir(root) and not any(is_sample_dir(p) for p in root.iterdir() if p.is_dir()):
        return [root]
    found = sorted({p.parent for p in root.rglob("*") if p.is_dir() and p.name in ("bl", "blend")}
                   | {p.parent for p in root.rglob("blend.mp4")} | {p.parent for p in root.rglob("fg.mp4")})
    if not found:
        raise EvaluationError(f"{root}: no sample folders (each needs blend.mp4 / fg.mp4 or a bl/ frame folder)")
    return found
