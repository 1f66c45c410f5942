"""The official LayerFlow sample layout, read into layered clips with the soft alpha kept.

Two layouts are recognised under a root folder:
- DAVIS style: `<seq>/fg/*.png  <seq>/mask/*.png  <seq>/bg/*.png  <seq>/bl/*.png` (fg already over mid-grey);
- YouTube-VOS style: `JPEGImages/<seq>/*.jpg` (blend), `impainting/<seq>/*.jpg` (bg), `mask/<seq>/*.jpg`
  (fg is derived as blend over mid-grey).
Prompts come from any `meta*.json` beside or above the sequence: `{"videos": {seq: {fg_prompt, bg_prompt, bl_prompt}}}`.
Background-only folders (no mask) are reported as not importable.

Shared: the engine imports these sequences as a source, generation takes one as its condition, evaluation reads
their prompts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_engine.schema import Captions, LayeredClip, over_grey, sample_key
from data_engine.video_io import VideoDecodeError, frame_files, read_frame_folder


class OfficialLayoutError(ValueError):
    """A folder that does not hold the official layout, or a sequence in it that cannot be read; the message
    names the file or folder and the reason."""


@dataclass(frozen=True)
class SequenceDirs:
    name: str
    blend: Path
    mask: Path
    bg: Path
    fg: Path | None
    meta_root: Path


def find_sequences(root: str | Path) -> list[SequenceDirs]:
    root = Path(root)
    if not root.is_dir():
        raise OfficialLayoutError(f"{root}: not a folder; pass the folder that holds the official sample layout")
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
                raise OfficialLayoutError(f"{meta_file}: not valid meta json ({exc})") from exc
            if name in videos:
                entry = videos[name]
                return Captions(
                    fg=entry.get("fg_prompt", "").strip(),
                    bg=entry.get("bg_prompt", "").strip(),
                    blend=entry.get("bl_prompt", "").strip(),
                )
    return Captions()


def _read(folder: Path, grey: bool) -> np.ndarray:
    try:
        return read_frame_folder(folder, grey=grey)
    except VideoDecodeError as exc:
        raise OfficialLayoutError(str(exc)) from exc


def read_sequence(seq: SequenceDirs, fps: float = 8.0) -> LayeredClip:
    """One sequence as a layered clip; frame counts are compared before any frame is decoded."""
    for folder in (seq.blend, seq.bg) + ((seq.fg,) if seq.fg else ()):
        if not folder.is_dir():
            raise OfficialLayoutError(f"{folder}: missing (the sequence {seq.name} needs fg/, mask/, bg/ and bl/)")
    mask_count = len(frame_files(seq.mask))
    if not mask_count:
        raise OfficialLayoutError(f"{seq.mask}: no frames")
    folders = {"blend": seq.blend, "bg": seq.bg, **({"fg": seq.fg} if seq.fg is not None else {})}
    for name, folder in folders.items():
        count = len(frame_files(folder))
        if count != mask_count:
            raise OfficialLayoutError(
                f"{seq.name}: {name} has {count} frames but mask has {mask_count}; they must match")
    alpha = _read(seq.mask, grey=True)
    blend = _read(seq.blend, grey=False)
    bg = _read(seq.bg, grey=False)
    fg = _read(seq.fg, grey=False) if seq.fg is not None else over_grey(blend, alpha)
    if not (alpha.shape[:3] == blend.shape[:3] == bg.shape[:3] == fg.shape[:3]):
        raise OfficialLayoutError(f"{seq.name}: layers differ in size (alpha {alpha.shape}, blend {blend.shape})")
    return LayeredClip(
        key=sample_key(f"official_{seq.name}", 0),
        fg=fg,
        alpha=alpha,
        bg=bg,
        blend=blend,
        captions=meta_prompts(seq.name, (seq.meta_root, seq.meta_root.parent)),
        fps=fps,
        kind="video",
        origin="official_import",
        source_id=str(seq.mask.parent if seq.fg is not None else seq.mask),
        frame_range=(0, int(alpha.shape[0])),
    )
