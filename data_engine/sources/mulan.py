"""MuLAn (Tudosiu et al., CVPR 2024) -> layered image samples, one per instance, rebuilt from its annotations.

MuLAn ships one zlib-compressed pickle per image, `<stem>.p.zl`, and no pixels: the base image is COCO 2017
(`train2017/` or `val2017/`) or LAION (the img2dataset file), found here by the annotation's stem under the
`images` roots. Each annotation holds full-frame masks and inpainted content:
    background: original_image_mask, inpainted_delta, blip2 / llava captions
    instances:  per instance original_image_mask, instance_mask, inpainted_delta, instance_alpha (a PIL matte),
                blip2 caption; in MuLAn's occlusion order, back to front
    image:      blip2 / llava captions of the whole image
A layer's RGB is `base * original_image_mask (* instance_mask) + inpainted_delta`, as MuLAn's
`dataset_decomposition.py` rebuilds it. Instance k becomes one sample: fg = its RGB over mid-grey, alpha = its
matte, bg = the background with instances 0..k-1 composited over it (what lies behind k), blend = k over that bg;
captions: the instance's, the background's, the image's.

MuLAn's layers are straight RGBA (its decomposition composites them so): the stored fg is that colour over
mid-grey, and the blend composites it with the alpha; a 16-bit matte keeps its soft values.

The pickles come from the internet: they are read with `data_engine.safe_pickle.restricted_loads`, allowing only
what this format holds (containers, NumPy arrays, PIL images built from the pickle's own bytes), never
`pickle.load`, and inflated only up to `max_annotation_mb` (a small zlib file can inflate to gigabytes). A
refused, oversized, corrupt or malformed annotation, a missing base image, an alpha of another size than its image
or an empty alpha is a `SourceError` naming the file and the reason: the engine quarantines it and goes on.
"""
from __future__ import annotations

import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data_engine.pixels import image_grey
from data_engine.safe_pickle import NUMPY_ARRAYS, PIL_IMAGES, restricted_loads
from data_engine.schema import Captions, LayeredClip, composite, over_grey, sample_key
from data_engine.sources.base import IMAGE_EXTS, LayeredSource, SourceError, read_source_image, require_folder

ANNOTATION_SUFFIX = ".p.zl"
MULAN_GLOBALS = NUMPY_ARRAYS | PIL_IMAGES
MB = 1 << 20


@dataclass(frozen=True)
class MulanOptions:
    annotations: str = ""  # a folder of <stem>.p.zl files (searched recursively)
    images: list[str] | str = ""  # base image roots, e.g. [coco/train2017, coco/val2017, laion/]
    caption: str = "blip2"  # which captioner's text to use: blip2 (COCO style) or llava (detailed)
    min_alpha: float = 0.001  # an instance whose matte covers less of the image is an empty alpha
    max_annotation_mb: int = 256  # an annotation that inflates to more is refused (a decompression bomb)


def inflate(path: Path, limit: int) -> bytes:
    """A zlib file's content, refused once it passes `limit` bytes (only that much is ever inflated)."""
    stream = zlib.decompressobj()
    try:
        raw = stream.decompress(path.read_bytes(), limit + 1)
    except zlib.error as exc:
        raise SourceError(f"{path}: not a zlib-compressed MuLAn annotation ({exc})") from None
    if len(raw) > limit:
        raise SourceError(f"{path}: inflates to more than {limit // MB} MB, refused as a decompression bomb (raise "
                          "max_annotation_mb if it is a genuine annotation)")
    if not stream.eof:
        raise SourceError(f"{path}: not a zlib-compressed MuLAn annotation (the zlib stream is truncated)")
    return raw


def load_annotation(path: Path, max_bytes: int = 256 * MB) -> dict[str, Any]:
    """One MuLAn annotation, inflated (at most `max_bytes`) and unpickled under the format's allow-list."""
    raw = inflate(path, max_bytes)
    try:
        ann = restricted_loads(raw, MULAN_GLOBALS, what=str(path))
    except pickle.UnpicklingError as exc:
        raise SourceError(str(exc)) from None
    if not isinstance(ann, dict) or not isinstance(ann.get("background"), dict) or "instances" not in ann:
        raise SourceError(f"{path}: not a MuLAn annotation (expected a dict with 'background' and 'instances')")
    return ann


def _array(value: Any, what: str, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[:2] != shape:
        raise SourceError(f"{what} is {list(np.shape(value))}, the base image {list(shape)}")
    return arr.astype(np.float32)


def layer_rgb(base: np.ndarray, part: dict[str, Any], what: str, instance: bool) -> np.ndarray:
    """`base * original_image_mask (* instance_mask) + inpainted_delta` as uint8 RGB (MuLAn's reconstruction)."""
    shape = base.shape[:2]
    try:
        x = base.astype(np.float32) * _array(part["original_image_mask"], f"{what} original_image_mask", shape)
        if instance:
            x = x * _array(part["instance_mask"], f"{what} instance_mask", shape)
        x = x + _array(part["inpainted_delta"], f"{what} inpainted_delta", shape)
    except KeyError as exc:
        raise SourceError(f"{what} has no {exc.args[0]!r}") from None
    return np.clip(x, 0, 255).astype(np.uint8)


def instance_matte(value: Any, what: str, shape: tuple[int, int]) -> np.ndarray:
    """The instance's alpha as uint8 [H, W] (a PIL image of 8 or 16 bits, or an array; 0..1 floats are scaled)."""
    if isinstance(value, Image.Image):
        value = image_grey(value)
    arr = np.asarray(value)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.shape != shape:
        raise SourceError(f"{what} alpha is {list(arr.shape)}, the image {list(shape)}: another size than its image")
    if arr.dtype == bool or (arr.dtype.kind == "f" and arr.max(initial=0) <= 1.0):
        arr = arr.astype(np.float32) * 255
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _caption(part: Any, which: str) -> str:
    if not isinstance(part, dict):
        return ""
    text = part.get(which) or part.get("blip2") or part.get("llava") or ""
    return text if isinstance(text, str) else ""


def _ordered(instances: Any, path: Path) -> list[tuple[str, dict]]:
    """Instances back to front: MuLAn's order (dict keys or list positions, numeric keys sorted as numbers)."""
    if isinstance(instances, dict):
        items = [(str(k), v) for k, v in instances.items()]
        if all(k.lstrip("-").isdigit() for k, _ in items):
            items.sort(key=lambda kv: int(kv[0]))
    elif isinstance(instances, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(instances)]
    else:
        raise SourceError(f"{path}: 'instances' is a {type(instances).__name__}, expected a dict or a list")
    if not all(isinstance(v, dict) for _, v in items):
        raise SourceError(f"{path}: every instance must be a dict of masks, alpha and captions")
    return items


class MulanSource(LayeredSource):
    name = "mulan"
    Options = MulanOptions
    required = ("annotations", "images")

    def __init__(self, annotations: str | Path, images: list[str] | str, caption: str = "blip2",
                 min_alpha: float = 0.001, max_annotation_mb: int = 256) -> None:
        self.annotations = Path(annotations)
        require_folder(self.annotations, f"folder of MuLAn annotations, <stem>{ANNOTATION_SUFFIX}")
        roots = [images] if isinstance(images, str) else list(images)
        self.images = [Path(r) for r in roots]
        missing = [str(r) for r in self.images if not r.is_dir()]
        if missing:
            raise SourceError(f"base image folder(s) {missing} not found; point images: at COCO 2017 train2017/ "
                              "and val2017/ and the LAION img2dataset folder")
        if caption not in ("blip2", "llava"):
            raise SourceError(f"caption must be blip2 or llava, got {caption!r}")
        self.caption, self.min_alpha, self.max_annotation_bytes = caption, min_alpha, max_annotation_mb * MB
        self._index: dict[str, Path] | None = None

    @classmethod
    def from_options(cls, opts: MulanOptions, work_dir: Path) -> MulanSource:
        return cls(opts.annotations, opts.images, opts.caption, opts.min_alpha, opts.max_annotation_mb)

    def list_inputs(self) -> list[str]:
        found = sorted(str(p) for p in self.annotations.rglob(f"*{ANNOTATION_SUFFIX}"))
        if not found:
            raise SourceError(f"{self.annotations}: no MuLAn annotations (<stem>{ANNOTATION_SUFFIX} files) in this "
                              "folder or below; point annotations: at the folder MuLAn's release unpacks to")
        return found

    def base_image(self, stem: str) -> Path:
        if self._index is None:  # one walk of the roots, then lookups by stem
            self._index = {}
            for root in self.images:
                for p in root.rglob("*"):
                    if p.suffix.lower() in IMAGE_EXTS:
                        self._index.setdefault(p.stem, p)
        try:
            return self._index[stem]
        except KeyError:
            raise SourceError(f"base image {stem}{{{','.join(IMAGE_EXTS)}}} not found under "
                              f"{[str(r) for r in self.images]} (MuLAn ships no pixels: add its COCO / LAION "
                              "folder to images:)") from None

    def load(self, item: str) -> list[LayeredClip]:
        path = Path(item)
        stem = path.name[: -len(ANNOTATION_SUFFIX)]
        ann = load_annotation(path, self.max_annotation_bytes)
        image_path = self.base_image(stem)
        base = read_source_image(image_path)
        shape = base.shape[:2]
        behind = layer_rgb(base, ann["background"], f"{path.name} background", instance=False)
        bg_caption = _caption(ann["background"], self.caption)
        image_caption = _caption(ann.get("image"), self.caption)
        clips = []
        for index, (name, part) in enumerate(_ordered(ann["instances"], path)):
            what = f"{path.name} instance {name}"
            rgb = layer_rgb(base, part, what, instance=True)
            if "instance_alpha" not in part:
                raise SourceError(f"{what} has no 'instance_alpha'")
            alpha = instance_matte(part["instance_alpha"], what, shape)
            if (alpha > 0).mean() < self.min_alpha:
                raise SourceError(f"{what}: empty alpha (covers {(alpha > 0).mean():.2%} of the image, "
                                  f"min_alpha {self.min_alpha:.2%})")
            rgb_t, alpha_t, bg_t = rgb[None], alpha[None], behind[None]
            blend = composite(rgb_t, alpha_t, bg_t)
            clips.append(LayeredClip(
                key=sample_key(f"mulan_{stem}", index),
                fg=over_grey(rgb_t, alpha_t), alpha=alpha_t, bg=bg_t, blend=blend,
                captions=Captions(fg=_caption(part, self.caption), bg=bg_caption, blend=image_caption),
                fps=1.0, kind="image", origin="image", source_id=f"mulan:{path}#{name}", frame_range=(0, 1),
            ))
            behind = blend[0]  # the next instance lies in front of this one
        if not clips:
            raise SourceError(f"{path}: no instances")
        return clips
