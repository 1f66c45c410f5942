"""Layered images -> image samples (T = 1), which the trainer turns into static videos (motion scale 1).

Folder layout, one sub-folder per image:
    <item>/fg.png        foreground RGB, or RGBA (then alpha.png may be omitted)
    <item>/alpha.png     8-bit alpha matte (soft values kept)
    <item>/bg.png        background RGB
    <item>/blend.png     optional; computed as fg*a + bg*(1-a) when absent
    <item>/captions.json {"fg": ..., "bg": ..., "blend": ...}
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_engine.schema import Captions, LayeredClip, composite, over_grey, sample_key
from data_engine.sources.base import LayeredSource, SourceError, read_source_image


@dataclass(frozen=True)
class LayeredImagesOptions:
    root: str = ""


class LayeredImageSource(LayeredSource):
    name = "layered_images"
    Options = LayeredImagesOptions
    required = ("root",)

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: not a folder of layered images (see data_engine/sources/layered_images.py)")

    @classmethod
    def from_options(cls, opts: LayeredImagesOptions, work_dir: Path) -> "LayeredImageSource":
        return cls(opts.root)

    def list_inputs(self) -> list[str]:
        return [str(p) for p in sorted(self.root.iterdir()) if p.is_dir()]

    def load(self, item: str) -> list[LayeredClip]:
        folder = Path(item)
        fg_path, alpha_path, bg_path = folder / "fg.png", folder / "alpha.png", folder / "bg.png"
        for p in (fg_path, bg_path):
            if not p.exists():
                raise SourceError(f"{p}: missing (each layered image needs fg.png and bg.png)")
        from PIL import Image

        with Image.open(fg_path) as im:
            has_alpha = im.mode in ("RGBA", "LA")
        if alpha_path.exists():
            alpha = read_source_image(alpha_path, grey=True)
        elif has_alpha:
            with Image.open(fg_path) as im:
                alpha = np.asarray(im.convert("RGBA"))[..., 3].copy()
        else:
            raise SourceError(f"{alpha_path}: missing, and {fg_path.name} has no alpha channel")
        rgb, bg = read_source_image(fg_path, grey=False), read_source_image(bg_path, grey=False)
        if not (rgb.shape[:2] == alpha.shape == bg.shape[:2]):
            raise SourceError(f"{folder}: fg {rgb.shape[:2]}, alpha {alpha.shape} and bg {bg.shape[:2]} differ in size")
        blend = read_source_image(folder / "blend.png", grey=False) if (folder / "blend.png").exists() else None
        captions_file = folder / "captions.json"
        try:
            captions = Captions.from_dict(json.loads(captions_file.read_text())) if captions_file.exists() else Captions()
        except (json.JSONDecodeError, TypeError) as exc:
            raise SourceError(f"{captions_file}: expected {{'fg', 'bg', 'blend'}} strings ({exc})") from exc
        rgb_t, alpha_t, bg_t = rgb[None], alpha[None], bg[None]
        return [
            LayeredClip(
                key=sample_key(f"image_{folder.name}", 0),
                fg=over_grey(rgb_t, alpha_t),
                alpha=alpha_t,
                bg=bg_t,
                blend=blend[None] if blend is not None else composite(rgb_t, alpha_t, bg_t),
                captions=captions,
                fps=1.0,
                kind="image",
                origin="image",
                source_id=str(folder),
                frame_range=(0, 1),
            )
        ]
