"""What a source's foreground colour means, and the layers it gives: every importer says which it reads.

- straight: the object's own colour, alpha not applied (PNG's RGBA, Composition-1k and Distinctions-646's fg/,
  VideoMatte240K's fgr/); blend = fg * a + bg * (1 - a).
- premultiplied: the colour already times alpha (some renders and compositing exports); blend = fg + bg * (1 - a).
Either way the stored fg is the object over mid-grey (`over_grey`), without dividing by alpha.

A set that gives a photo and its matte but no foreground colour gets one estimated by pymatting's
`estimate_foreground_ml` (Germer et al. 2020): the photo's colour at a soft edge mixes in what lies behind.
"""
from __future__ import annotations

import numpy as np

from data_engine.schema import MID_GREY, composite, composite_premultiplied, over_grey

FOREGROUNDS = ("straight", "premultiplied")


def check_foreground(value: str) -> None:
    """For a source's Options: a one-line error naming the choices."""
    if value not in FOREGROUNDS:
        raise ValueError(f"foreground must be straight or premultiplied (what the set's fg colour holds), "
                         f"got {value!r}")


def foreground_layers(colour: np.ndarray, alpha: np.ndarray, bg: np.ndarray,
                      foreground: str) -> tuple[np.ndarray, np.ndarray]:
    """(fg over mid-grey, blend over `bg`) of uint8 colour [..., H, W, 3] and alpha [..., H, W]."""
    if foreground == "premultiplied":
        return composite_premultiplied(colour, alpha, MID_GREY), composite_premultiplied(colour, alpha, bg)
    return over_grey(colour, alpha), composite(colour, alpha, bg)


def estimate_foreground(photo: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The straight foreground colour uint8 [H, W, 3] of a photo [H, W, 3] and its matte [H, W]."""
    from pymatting import estimate_foreground_ml  # numba compiles it on first import: only sets that need it pay

    fg = estimate_foreground_ml(photo.astype(np.float64) / 255, alpha.astype(np.float64) / 255)
    return np.clip(np.rint(fg * 255), 0, 255).astype(np.uint8)
