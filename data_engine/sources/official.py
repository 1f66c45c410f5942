"""Importer for the official LayerFlow sample layout, keeping the soft alpha.

Two layouts are recognised under a root folder:
- DAVIS style: `<seq>/fg/*.png  <seq>/mask/*.png  <seq>/bg/*.png  <seq>/bl/*.png` (fg already over mid-grey);
- YouTube-VOS style: `JPEGImages/<seq>/*.jpg` (blend), `impainting/<seq>/*.jpg` (bg), `mask/<seq>/*.jpg`
  (fg is derived as blend over mid-grey).
Prompts come from any `meta*.json` beside or above the sequence: `{"videos": {seq: {fg_prompt, bg_prompt, bl_prompt}}}`.
Background-only folders (no mask) are reported as not importable.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_engine.schema import Captions, LayeredClip, over_grey, sample_key
from data_engine.sources.base import Source, SourceError
from data_engine.video_io import VideoDecodeError, read_image

FRAME_EXTS = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class SequenceDirs:
    name: str
    blend: Path
    mask: Path
    bg: Path
    fg: Path | None
    meta_root: Path


def _frames(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTS)


def find_sequences(root: str | Path) -> list[SequenceDirs]:
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"{root}: not a folder; pass the folder that holds the official sample layout")
    found: list[SequenceDirs] = []
    for mask_dir in sorted(root.rglob("mask")):
        if not mask_dir.is_dir():
            continue
        seq = mask_dir.parent
        if (seq / "bl").is_dir():  # DAVIS style: mask/ is inside the sequence folder
            found.append(SequenceDirs(seq.name, seq / "bl", mask_dir, seq / "bg", seq / "fg", seq.parent))
            continue
        for seq_mask in sorted(p for p in mask_dir.iterdir() if p.is_dir()):  # YouTube-VOS style
            base = mask_dir.parent
            found.append(
                SequenceDirs(
                    seq_mask.name,
                    base / "JPEGImages" / seq_mask.name,
                    seq_mask,
                    base / "impainting" / seq_mask.name,
                    None,
                    base,
                )
            )
    return found


def meta_prompts(name: str, folders: tuple[Path, ...]) -> Captions:
    """The fg/bg/blend prompts of sequence `name` from the first `meta*.json` in `folders` that lists it."""
    for folder in folders:
        for meta_file in sorted(folder.glob("meta*.json")):
            try:
                videos = json.loads(meta_file.read_text()).get("videos", {})
            except (json.JSONDecodeError, AttributeError) as exc:
                raise SourceError(f"{meta_file}: not valid meta json ({exc})") from exc
            if name in videos:
                entry = videos[name]
                return Captions(
                    fg=entry.get("fg_prompt", "").strip(),
                    bg=entry.get("bg_prompt", "").strip(),
                    blend=entry.get("bl_prompt", "").strip(),
                )
    return Captions()


def _read_stack(files: list[Path], grey: bool) -> np.ndarray:
    frames = []
    for f in files:
        try:
            frames.append(read_image(f, grey=grey))
        except VideoDecodeError as exc:
            raise SourceError(str(exc)) from exc
    shapes = {fr.shape for fr in frames}
    if len(shapes) != 1:
        raise SourceError(f"{files[0].parent}: frames differ in size {sorted(shapes)}")
    return np.stack(frames)


class OfficialSampleSource(Source):
    name = "official_import"

    def __init__(self, root: str | Path, fps: float = 8.0) -> None:
        self.root = Path(root)
        self.fps = fps
        self._sequences = {str(s.mask): s for s in find_sequences(self.root)}

    def list_inputs(self) -> list[str]:
        return list(self._sequences)

    def load(self, item: str) -> list[LayeredClip]:
        seq = self._sequences[item]
        for folder in (seq.blend, seq.bg) + ((seq.fg,) if seq.fg else ()):
            if not folder.is_dir():
                raise SourceError(f"{folder}: missing (the sequence {seq.name} needs fg/, mask/, bg/ and bl/)")
        mask_files = _frames(seq.mask)
        if not mask_files:
            raise SourceError(f"{seq.mask}: no frames")
        lists = {"blend": _frames(seq.blend), "bg": _frames(seq.bg)}
        if seq.fg is not None:
            lists["fg"] = _frames(seq.fg)
        for name, files in lists.items():
            if len(files) != len(mask_files):
                raise SourceError(
                    f"{seq.name}: {name} has {len(files)} frames but mask has {len(mask_files)}; they must match"
                )
        alpha = _read_stack(mask_files, grey=True)
        blend = _read_stack(lists["blend"], grey=False)
        bg = _read_stack(lists["bg"], grey=False)
        fg = _read_stack(lists["fg"], grey=False) if "fg" in lists else over_grey(blend, alpha)
        if not (alpha.shape[:3] == blend.shape[:3] == bg.shape[:3] == fg.shape[:3]):
            raise SourceError(f"{seq.name}: layers differ in size (alpha {alpha.shape}, blend {blend.shape})")
        return [
            LayeredClip(
                key=sample_key(f"official_{seq.name}", 0),
                fg=fg,
                alpha=alpha,
                bg=bg,
                blend=blend,
                captions=meta_prompts(seq.name, (seq.meta_root, seq.meta_root.parent)),
                fps=self.fps,
                kind="video",
                origin="official_import",
                source_id=str(seq.mask.parent if seq.fg is not None else seq.mask),
                frame_range=(0, int(alpha.shape[0])),
            )
        ]
