"""Image-matting sets -> layered image samples (stage 3's "image matting datasets").

Layouts, one file per image, matched by name (any of .png .jpg .jpeg .webp .tif .tiff; mattes 8 or 16 bits):
    <root>/fg/<name>     + <root>/alpha/<name>  + <root>/bg/<name>    foreground, matte and its own background
    <root>/fg/<name>     + <root>/alpha/<name>  + backgrounds: DIR    Composition-1k / Distinctions-646 style: the
                                                                      foreground pasted over a background drawn
                                                                      from DIR by (seed, name), scaled to cover
    <root>/image/<name>  + <root>/alpha/<name>  + <root>/bg/<name>    a photo, its matte and the clean background:
                                                                      blend = the photo; its fg colour is estimated
                                                                      (pymatting, data_engine/sources/foreground.py)
    <root>/image/<name>  + <root>/alpha/<name>                        a photo and its matte, no background: its row
                                                                      carries the photo (`frames`) and matte (`mask`)
                                                                      unfinished, for the image_inpaint stage to fill
                                                                      the object's region and finish the sample
                                                                      (infra/configs/engine/image_matting.yaml)
    <root>/captions.json                                              optional {name: {fg, bg, blend}}
fg/ colour is straight (as Composition-1k and Distinctions-646 ship it) unless `foreground: premultiplied`; an RGBA
fg/ file with no alpha/ beside it carries its own matte. An alpha of another size than its image, an empty alpha or
a missing or unreadable file is a `SourceError` naming the file: the engine quarantines it and goes on.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_engine.schema import Captions, LayeredClip, over_grey, sample_key
from data_engine.sources.base import (
    IMAGE_EXTS,
    LayeredSource,
    SourceError,
    read_optional_json,
    read_source_image,
    read_source_rgba,
    require_folder,
)
from data_engine.sources.foreground import check_foreground, estimate_foreground, foreground_layers
from data_engine.stages.base import CAPTIONED
from data_engine.video_io import cover_geometry, resize_crop


@dataclass(frozen=True)
class ImageMattingOptions:
    root: str = ""
    backgrounds: str = ""  # backgrounds to paste fg/ over when the set has no bg/
    seed: int = 0
    min_alpha: float = 0.001  # an alpha covering less of its image than this is empty
    foreground: str = "straight"  # what fg/ colour holds: straight or premultiplied

    def __post_init__(self) -> None:
        check_foreground(self.foreground)


def _by_name(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTS}


class ImageMattingSource(LayeredSource):
    name = "image_matting"
    Options = ImageMattingOptions
    required = ("root",)
    # The fields of a photo's row when its background is to be inpainted (see `rows`).
    unfinished = frozenset({"key", "source_id", "frames", "mask", "fps", "captions", "scores"})

    def __init__(self, opts: ImageMattingOptions) -> None:
        self.opts, root = opts, Path(opts.root)
        require_folder(root, "image-matting set")
        self.alpha = _by_name(root / "alpha")
        self.fg, self.image, self.bg = _by_name(root / "fg"), _by_name(root / "image"), _by_name(root / "bg")
        self.backgrounds = _by_name(Path(opts.backgrounds)) if opts.backgrounds else {}
        if not (self.fg or self.image) or not (self.alpha or self.fg):
            raise SourceError(f"{root}: expected fg/ or image/ with alpha/ (or RGBA fg/ files), see "
                              "data_engine/sources/image_matting.py")
        if opts.backgrounds and not self.backgrounds:
            raise SourceError(f"{opts.backgrounds}: no background images")
        self.captions = read_optional_json(root / "captions.json") or {}

    @classmethod
    def from_options(cls, opts: ImageMattingOptions, work_dir: Path) -> ImageMattingSource:
        return cls(opts)

    def list_inputs(self) -> list[str]:
        return sorted(set(self.fg) | set(self.image))

    def input_id(self, item: str) -> str:
        return f"image_matting:{self.opts.root}:{item}"

    def needs_inpainting(self, item: str) -> bool:
        """A photo (image/) with no bg/ of its own: its background is the image_inpaint stage's to make."""
        return item in self.image and item not in self.fg and item not in self.bg

    def provides(self, items: list[str]) -> frozenset[str]:
        inpaint = [self.needs_inpainting(i) for i in items]
        if not any(inpaint) and all(all(self._captions(i).as_dict().values()) for i in items):
            return self.writes | {CAPTIONED}  # captions.json gives every caption: nothing for the caption stage
        return (self.writes if not all(inpaint) else frozenset()) | (self.unfinished if any(inpaint) else frozenset())

    def rows(self, item: str) -> list[dict[str, Any]]:
        if not self.needs_inpainting(item):
            return super().rows(item)
        rgb, alpha = self._read(item)
        return [{"key": sample_key(f"matting_{item}", 0), "source_id": str(self.image[item]), "frames": rgb[None],
                 "mask": alpha[None], "fps": 1.0, "captions": self._captions(item).as_dict(),
                 "scores": {"background": "inpainted"}}]

    def load(self, item: str) -> list[LayeredClip]:
        colour_path = self.fg.get(item) or self.image[item]
        rgb, alpha = self._read(item)
        bg, bg_name = self._background(item, colour_path, rgb.shape[:2])
        alpha_t, bg_t = alpha[None], bg[None]
        if item in self.fg:
            fg, blend = foreground_layers(rgb[None], alpha_t, bg_t, self.opts.foreground)
        else:  # a photo is the composite itself; its object's own colour is not in the set
            fg, blend = over_grey(estimate_foreground(rgb, alpha)[None], alpha_t), rgb[None]
        return [LayeredClip(
            key=sample_key(f"matting_{item}", 0), fg=fg, alpha=alpha_t, bg=bg_t, blend=blend,
            captions=self._captions(item), fps=1.0, kind="image", origin="image", source_id=str(colour_path),
            frame_range=(0, 1), scores={"background": bg_name},
        )]

    def _read(self, item: str) -> tuple[np.ndarray, np.ndarray]:
        """The item's colours uint8 [H, W, 3] and matte [H, W], checked."""
        colour_path = self.fg.get(item) or self.image[item]
        rgb, carried = read_source_rgba(colour_path)
        if item in self.alpha:
            alpha = read_source_image(self.alpha[item], grey=True)
        elif carried is not None and item in self.fg:
            alpha = carried
        else:
            raise SourceError(f"{colour_path}: no matte beside it (expected {Path(self.opts.root) / 'alpha' / item}.*)")
        alpha_path = self.alpha.get(item, colour_path)
        if alpha.shape != rgb.shape[:2]:
            raise SourceError(f"{alpha_path}: alpha {list(alpha.shape)} is another size than its image "
                              f"{list(rgb.shape[:2])}")
        if (alpha > 0).mean() < self.opts.min_alpha:
            raise SourceError(f"{alpha_path}: empty alpha (covers {(alpha > 0).mean():.2%} of the image)")
        return rgb, alpha

    def _captions(self, item: str) -> Captions:
        caps = self.captions.get(item, {}) if isinstance(self.captions.get(item), dict) else {}
        return Captions(fg=caps.get("fg", ""), bg=caps.get("bg", ""), blend=caps.get("blend", ""))

    def _background(self, item: str, colour_path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, str]:
        if item in self.bg:
            bg = read_source_image(self.bg[item], grey=False)
            if bg.shape[:2] != shape:
                raise SourceError(f"{self.bg[item]}: background {list(bg.shape[:2])} is another size than its "
                                  f"image {list(shape)}")
            return bg, str(self.bg[item])
        if item in self.fg and self.backgrounds:
            names = sorted(self.backgrounds)
            rng = np.random.default_rng([self.opts.seed, *item.encode()])
            path = self.backgrounds[names[int(rng.integers(len(names)))]]
            bg = read_source_image(path, grey=False)
            return resize_crop(bg[None], cover_geometry(*bg.shape[:2], *shape))[0], str(path)
        if item not in self.fg:  # a photo reaches here only through load(): rows() sends it to image_inpaint
            raise SourceError(f"{colour_path}: no background (no bg/{item}.*); a photo without one needs the "
                              "image_inpaint stage (infra/configs/engine/image_matting.yaml)")
        raise SourceError(f"{colour_path}: no background (no bg/{item}.*, and no backgrounds: folder to paste it "
                          "over)")
