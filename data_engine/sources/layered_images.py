"""Layered images -> image samples (T = 1), which the trainer turns into static videos (motion scale 1).

Folder layout, one sub-folder per image:
    <item>/fg.png        foreground colour, or RGBA (then alpha.png may be omitted): straight by default, as PNG
                         defines RGBA; `foreground: premultiplied` for colour already times alpha
    <item>/alpha.png     alpha matte, 8 or 16 bits (soft values kept)
    <item>/bg.png        background RGB
    <item>/blend.png     optional; computed from fg, alpha and bg when absent
    <item>/captions.json {"fg": ..., "bg": ..., "blend": ...}
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from data_engine.schema import Captions, LayeredClip, sample_key
from data_engine.sources.base import LayeredSource, SourceError, read_source_image, read_source_rgba, require_folder
from data_engine.sources.foreground import check_foreground, foreground_layers


@dataclass(frozen=True)
class LayeredImagesOptions:
    root: str = ""
    foreground: str = "straight"  # what fg.png's colour holds: straight or premultiplied

    def __post_init__(self) -> None:
        check_foreground(self.foreground)


class LayeredImageSource(LayeredSource):
    name = "layered_images"
    Options = LayeredImagesOptions
    required = ("root",)

    def __init__(self, root: str | Path, foreground: str = "straight") -> None:
        self.root, self.foreground = Path(root), foreground
        require_folder(self.root, "folder of layered images")

    @classmethod
    def from_options(cls, opts: LayeredImagesOptions, work_dir: Path) -> LayeredImageSource:
        return cls(opts.root, opts.foreground)

    def list_inputs(self) -> list[str]:
        return [str(p) for p in sorted(self.root.iterdir()) if p.is_dir()]

    def load(self, item: str) -> list[LayeredClip]:
        folder = Path(item)
        fg_path, alpha_path, bg_path = folder / "fg.png", folder / "alpha.png", folder / "bg.png"
        for p in (fg_path, bg_path):
            if not p.exists():
                raise SourceError(f"{p}: missing (each layered image needs fg.png and bg.png)")
        rgb, carried = read_source_rgba(fg_path)
        if alpha_path.exists():
            alpha = read_source_image(alpha_path, grey=True)
        elif carried is not None:
            alpha = carried
        else:
            raise SourceError(f"{alpha_path}: missing, and {fg_path.name} has no alpha channel")
        bg = read_source_image(bg_path, grey=False)
        if not (rgb.shape[:2] == alpha.shape == bg.shape[:2]):
            raise SourceError(f"{folder}: fg {rgb.shape[:2]}, alpha {alpha.shape} and bg {bg.shape[:2]} differ in size")
        blend = read_source_image(folder / "blend.png", grey=False) if (folder / "blend.png").exists() else None
        captions_file = folder / "captions.json"
        try:
            captions = (Captions.from_dict(json.loads(captions_file.read_text())) if captions_file.exists()
                        else Captions())
        except (json.JSONDecodeError, TypeError) as exc:
            raise SourceError(f"{captions_file}: expected {{'fg', 'bg', 'blend'}} strings ({exc})") from exc
        alpha_t, bg_t = alpha[None], bg[None]
        fg, composed = foreground_layers(rgb[None], alpha_t, bg_t, self.foreground)
        return [
            LayeredClip(
                key=sample_key(f"image_{folder.name}", 0),
                fg=fg,
                alpha=alpha_t,
                bg=bg_t,
                blend=blend[None] if blend is not None else composed,
                captions=captions,
                fps=1.0,
                kind="image",
                origin="image",
                source_id=str(folder),
                frame_range=(0, 1),
            )
        ]
