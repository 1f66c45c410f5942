"""The layered clip: the unit of data shared by the engine, the shards, the trainer and the model.

Layer order everywhere (shards, packing, outputs) is fg, alpha, bg, blend: the paper's one foreground. A clip
with K foregrounds appends fg_k, alpha_k for k = 1 .. K-1 (`layer_names`), so a K = 1 clip, shard, sequence and
prompt set is exactly the paper's and each layer keeps its place for every K. Foregrounds are in depth order,
front first: the blend is fg_{K-1} over the bg, then each nearer one over that (`composite_layers`).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

LAYERS: tuple[str, ...] = ("fg", "alpha", "bg", "blend")
CAPTIONED_LAYERS: tuple[str, ...] = ("fg", "bg", "blend")
# Where alpha = 0 the official data shows the foreground over mid-grey (rgb * alpha in [-1, 1] space).
MID_GREY = 127
ENGINE_VERSION = "0.1.0"
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
_EXTRA_RE = re.compile(r"^(fg|alpha)_([1-9][0-9]*)$")


def fg_name(k: int) -> str:
    """The layer name of foreground k (front first): fg, fg_1, fg_2, ..."""
    return "fg" if k == 0 else f"fg_{k}"


def alpha_name(k: int) -> str:
    return "alpha" if k == 0 else f"alpha_{k}"


def layer_names(num_foregrounds: int = 1) -> tuple[str, ...]:
    """Every layer of a K-foreground clip in sequence order: `LAYERS`, then fg_k, alpha_k for k >= 1."""
    if num_foregrounds < 1:
        raise ValueError(f"a layered clip has at least one foreground, got {num_foregrounds}")
    return LAYERS + tuple(name for k in range(1, num_foregrounds) for name in (fg_name(k), alpha_name(k)))


def captioned_layer_names(num_foregrounds: int = 1) -> tuple[str, ...]:
    """The layers with a prompt, in prompt-index order: fg, bg, blend (the paper's 0, 1, 2), then fg_1, fg_2..."""
    return CAPTIONED_LAYERS + tuple(fg_name(k) for k in range(1, num_foregrounds))


def is_alpha(name: str) -> bool:
    return name == "alpha" or name.startswith("alpha_")


def foreground_index(name: str) -> int | None:
    """k for fg_k / alpha_k (0 for fg and alpha), None for bg and blend."""
    if name in ("fg", "alpha"):
        return 0
    match = _EXTRA_RE.match(name)
    return int(match.group(2)) if match else None


def clip_key(source: str, clip: int) -> str:
    """`{source}-{clip:05d}`, the key of one clip before its objects are told apart, with every character
    WebDataset would misread replaced."""
    safe = re.sub(r"[^A-Za-z0-9_\-]", "_", source)
    return f"{safe}-{clip:05d}"


def object_key(clip: str, obj: int) -> str:
    """`{clip key}-{obj:02d}`: the sample key of object `obj` of a clip."""
    return f"{clip}-{obj:02d}"


def sample_key(source: str, clip: int, obj: int = 0) -> str:
    """`{source}-{clip:05d}-{obj:02d}`: the one sample-key layout of every source and stage."""
    return object_key(clip_key(source, clip), obj)


def printable_text(text: str) -> str:
    """Text as printable UTF-8 on one line: captioning models emit NULs and other control or format characters,
    U+FFFD for bytes their tokenizer could not decode, and lone surrogates that UTF-8 cannot even encode; all are
    dropped, and runs of whitespace become one space."""
    kept = "".join(ch for ch in text if ch.isspace() or (unicodedata.category(ch)[0] != "C" and ch != "\ufffd"))
    return " ".join(kept.split())


@dataclass
class Captions:
    """Per-layer prompts; always printable (see `printable_text`), whichever model or source wrote them.
    `more_fg` holds the prompts of foregrounds 1 .. K-1."""

    fg: str = ""
    bg: str = ""
    blend: str = ""
    more_fg: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for layer in CAPTIONED_LAYERS:
            setattr(self, layer, printable_text(getattr(self, layer)))
        self.more_fg = tuple(printable_text(text) for text in self.more_fg)

    @property
    def num_foregrounds(self) -> int:
        return 1 + len(self.more_fg)

    def as_dict(self) -> dict[str, str]:
        """{layer: prompt} over `captioned_layer_names(K)`."""
        extra = {fg_name(k + 1): text for k, text in enumerate(self.more_fg)}
        return {"fg": self.fg, "bg": self.bg, "blend": self.blend, **extra}

    @classmethod
    def from_dict(cls, captions: dict[str, str]) -> Captions:
        """The inverse of `as_dict`; fg_k must run from fg_1 without a gap."""
        unknown = sorted(k for k in captions if k not in CAPTIONED_LAYERS and not _EXTRA_RE.match(k))
        if unknown or any(k.startswith("alpha") for k in captions):
            raise ValueError(f"captions name unknown layers {unknown or sorted(captions)}; captioned layers are "
                             "fg, bg, blend and fg_1, fg_2, ...")
        extra = sorted(int(k[3:]) for k in captions if k.startswith("fg_"))
        if extra != list(range(1, len(extra) + 1)):
            raise ValueError(f"foreground captions must be fg_1 .. fg_K-1 without a gap, got fg_{extra}")
        return cls(fg=captions.get("fg", ""), bg=captions.get("bg", ""), blend=captions.get("blend", ""),
                   more_fg=tuple(captions[fg_name(k)] for k in extra))


@dataclass
class LayeredClip:
    """One clip (or one layered image, T = 1) as its foreground object(s), background and blend.

    Arrays are uint8: fg/bg/blend [T, H, W, 3], alpha [T, H, W]. `fg` is the foreground composited over
    mid-grey where alpha = 0, as the official data stores it. `more_layers` holds foregrounds 1 .. K-1 as
    {fg_k: ..., alpha_k: ...} (none: the paper's single foreground); `depth_order` the engine's object ids of the
    foregrounds, front first (the order their masks' overlaps gave).
    """

    key: str
    fg: np.ndarray
    alpha: np.ndarray
    bg: np.ndarray
    blend: np.ndarray
    captions: Captions = field(default_factory=Captions)
    fps: float = 8.0
    kind: Literal["video", "image"] = "video"
    origin: str = "engine"
    source_id: str = ""
    frame_range: tuple[int, int] = (0, 0)
    scores: dict[str, Any] = field(default_factory=dict)
    engine_version: str = ENGINE_VERSION
    more_layers: dict[str, np.ndarray] = field(default_factory=dict)
    depth_order: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.validate()

    @property
    def num_frames(self) -> int:
        return int(self.alpha.shape[0])

    @property
    def height(self) -> int:
        return int(self.alpha.shape[1])

    @property
    def width(self) -> int:
        return int(self.alpha.shape[2])

    @property
    def num_foregrounds(self) -> int:
        return 1 + len(self.more_layers) // 2

    @property
    def layer_names(self) -> tuple[str, ...]:
        return layer_names(self.num_foregrounds)

    def layer(self, name: str) -> np.ndarray:
        if name in LAYERS:
            return getattr(self, name)
        if name not in self.more_layers:
            raise KeyError(f"clip {self.key} has no layer {name!r}; its layers are {', '.join(self.layer_names)}")
        return self.more_layers[name]

    def validate(self) -> None:
        if not _KEY_RE.match(self.key):
            raise ValueError(f"sample key {self.key!r} may only hold letters, digits, '_' and '-' (no dots)")
        if self.kind not in ("video", "image"):
            raise ValueError(f"kind must be 'video' or 'image', got {self.kind!r}")
        if self.alpha.ndim != 3:
            raise ValueError(f"alpha must be [T, H, W], got shape {self.alpha.shape}")
        expected = (*self.alpha.shape, 3)
        count = 1 + len(self.more_layers) // 2
        if set(self.more_layers) != set(layer_names(count)[len(LAYERS):]):
            raise ValueError(f"more_layers must be fg_k and alpha_k for k = 1 .. K-1, got {sorted(self.more_layers)}")
        if self.captions.more_fg and self.captions.num_foregrounds != count:
            raise ValueError(f"{count} foreground(s) but captions for {self.captions.num_foregrounds}")
        if self.depth_order and len(self.depth_order) != count:
            raise ValueError(f"depth_order names {len(self.depth_order)} objects for {count} foreground(s)")
        for name in layer_names(count):
            arr = self.layer(name)
            if arr.dtype != np.uint8:
                raise ValueError(f"{name} must be uint8, got {arr.dtype}")
            want = self.alpha.shape if is_alpha(name) else expected
            if arr.shape != want:
                raise ValueError(f"{name} has shape {arr.shape}, expected {want}")
        if self.kind == "image" and self.num_frames != 1:
            raise ValueError(f"an image sample has one frame, got {self.num_frames}")

    def metadata(self) -> dict[str, Any]:
        """The sample's `json` member (everything except the pixels). A K > 1 clip adds `layer_format` 2,
        `num_foregrounds` and `depth_order`; a K = 1 clip's is exactly the format-1 member."""
        extra = {} if self.num_foregrounds == 1 else {
            "layer_format": 2, "num_foregrounds": self.num_foregrounds, "depth_order": list(self.depth_order)}
        return {
            "key": self.key,
            "kind": self.kind,
            "captions": self.captions.as_dict(),
            "fps": float(self.fps),
            "num_frames": self.num_frames,
            "height": self.height,
            "width": self.width,
            "origin": self.origin,
            "source_id": self.source_id,
            "frame_range": [int(self.frame_range[0]), int(self.frame_range[1])],
            "scores": self.scores,
            "engine_version": self.engine_version,
            **extra,
        }

    @classmethod
    def from_named_layers(cls, layers: dict[str, np.ndarray], **fields: Any) -> LayeredClip:
        """A clip from {layer name: array} over `layer_names(K)`: the paper's four layers as fields, the others
        (fg_k, alpha_k) as `more_layers`."""
        more = {name: array for name, array in layers.items() if name not in LAYERS}
        return cls(**{name: layers[name] for name in LAYERS}, more_layers=more, **fields)

    @classmethod
    def from_layers(cls, meta: dict[str, Any], layers: dict[str, np.ndarray]) -> LayeredClip:
        count = int(meta.get("num_foregrounds", 1))
        return cls.from_named_layers(
            {name: layers[name] for name in layer_names(count)},
            key=meta["key"],
            captions=Captions.from_dict(meta.get("captions", {})),
            fps=float(meta.get("fps", 8.0)),
            kind=meta.get("kind", "video"),
            origin=meta.get("origin", "engine"),
            source_id=meta.get("source_id", ""),
            frame_range=tuple(meta.get("frame_range", (0, 0))),
            scores=meta.get("scores", {}),
            engine_version=meta.get("engine_version", ENGINE_VERSION),
            depth_order=tuple(meta.get("depth_order", ())),
        )


def composite(fg_rgb: np.ndarray, alpha: np.ndarray, bg: np.ndarray | int) -> np.ndarray:
    """blend = fg * a + bg * (1 - a) rounded to nearest; uint8 in and out, alpha [..., H, W], bg an image or a level.

    In 16-bit integers: x = fg * a + bg * (255 - a) <= 65025, and (x + 128 + ((x + 128) >> 8)) >> 8 is
    round(x / 255) for every such x (255 is odd, so there are no ties). It equals the float formula for all
    256^3 inputs (tested) and runs ~3x faster, which matters: every engine clip is composited twice.
    """
    for name, arr in (("fg", fg_rgb), ("alpha", alpha), ("bg", bg)):
        if isinstance(arr, np.ndarray) and arr.dtype != np.uint8:
            raise ValueError(f"composite: {name} must be uint8, got {arr.dtype}")
    a = alpha.astype(np.uint16)[..., None]
    x = fg_rgb.astype(np.uint16) * a
    x += np.asarray(bg, np.uint16) * (255 - a)
    x += 128
    x += x >> 8
    x >>= 8
    return x.astype(np.uint8)


def composite_premultiplied(colour: np.ndarray, alpha: np.ndarray, bg: np.ndarray | int) -> np.ndarray:
    """blend = colour + bg * (1 - a) for a premultiplied colour (colour = fg * a, already), rounded to nearest."""
    for name, arr in (("colour", colour), ("alpha", alpha), ("bg", bg)):
        if isinstance(arr, np.ndarray) and arr.dtype != np.uint8:
            raise ValueError(f"composite_premultiplied: {name} must be uint8, got {arr.dtype}")
    x = colour.astype(np.uint32) * 255 + np.asarray(bg, np.uint32) * (255 - alpha.astype(np.uint32)[..., None])
    return np.minimum((x + 127) // 255, 255).astype(np.uint8)


def composite_layers(rgbs: list[np.ndarray], alphas: list[np.ndarray], bg: np.ndarray) -> np.ndarray:
    """The blend of foregrounds in depth order (front first) over `bg`: the farthest composited first, each
    nearer one over the result. One foreground is `composite`."""
    if len(rgbs) != len(alphas) or not rgbs:
        raise ValueError(f"composite_layers needs one alpha per foreground, got {len(rgbs)} and {len(alphas)}")
    out = bg
    for rgb, alpha in zip(reversed(rgbs), reversed(alphas)):
        out = composite(rgb, alpha, out)
    return out


def over_grey(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The official fg layout: the object's RGB where alpha = 1, mid-grey where alpha = 0."""
    return composite(rgb, alpha, MID_GREY)
