"""Exports re-open with PyAV and keep the alpha channel; the RGBA colour re-composites to the generated fg."""
from __future__ import annotations

import json

import numpy as np
import pytest

from data_engine.schema import MID_GREY, Captions, LayeredClip, composite, over_grey
from data_engine.video_io import decode_video, probe_video, psnr, read_image
from model.export import (
    ExportError,
    ExportOptions,
    export_clip,
    preview_frames,
    read_rgba_video,
    straight_rgb,
    write_webm_rgba,
)

T, H, W = 6, 48, 64


def _clip() -> LayeredClip:
    yy, xx = np.mgrid[0:H, 0:W]
    alpha = np.stack([np.clip(255 - 12 * np.hypot(xx - 20 - 4 * t, yy - 24), 0, 255) for t in range(T)]).astype(np.uint8)
    alpha[:, :, 50:56] = 128  # a half-transparent band
    rgb = np.zeros((T, H, W, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 220, (xx * 3)[None], 40
    bg = np.broadcast_to(((yy * 5) % 256).astype(np.uint8)[None, ..., None], (T, H, W, 3)).copy()
    return LayeredClip(
        "gen-00000-00", over_grey(rgb, alpha), alpha, bg, composite(rgb, alpha, bg), Captions("a", "b", "c")
    )


def test_straight_rgb_inverts_over_grey():
    clip = _clip()
    rgb = straight_rgb(clip.fg, clip.alpha)
    assert (rgb[clip.alpha == 0] == 0).all()
    recomposited = composite(rgb, clip.alpha, np.full_like(rgb, MID_GREY))
    assert np.abs(recomposited.astype(int) - clip.fg.astype(int)).max() <= 1
    opaque = clip.alpha == 255
    assert np.array_equal(rgb[opaque], clip.fg[opaque])


def test_export_all_outputs_reopen_with_alpha(tmp_path):
    clip = _clip()
    result = export_clip(clip, tmp_path / "out")
    files = result.files
    expected = {"fg_rgba_png", "fg_rgba_webm", "fg_rgba_mov", "fg", "alpha", "bg", "blend", "preview", "preview_png", "meta"}
    assert set(files) == expected and all(p.exists() for p in files.values())

    truth = np.concatenate([straight_rgb(clip.fg, clip.alpha), clip.alpha[..., None]], -1)
    pngs = sorted(files["fg_rgba_png"].glob("*.png"))
    assert len(pngs) == T
    from PIL import Image

    first = np.asarray(Image.open(pngs[0]))
    assert first.shape == (H, W, 4) and np.array_equal(first, truth[0])  # PNG is lossless

    prores = read_rgba_video(files["fg_rgba_mov"])
    assert prores.shape == (T, H, W, 4)
    assert np.abs(prores[..., 3].astype(int) - clip.alpha).max() <= 1  # 10-bit alpha
    assert psnr(prores[..., :3], truth[..., :3]) > 40

    webm = read_rgba_video(files["fg_rgba_webm"])
    assert webm.shape == (T, H, W, 4)
    assert psnr(webm[..., 3], clip.alpha) > 35
    assert np.abs(webm[..., 3].astype(int)[clip.alpha == 0]).mean() < 2  # transparent stays transparent

    assert np.array_equal(decode_video(files["alpha"], grey=True), clip.alpha)  # lossless grey H.264
    assert psnr(decode_video(files["bg"]), clip.bg) > 35
    assert psnr(decode_video(files["blend"]), clip.blend) > 30
    info = probe_video(files["preview"])
    assert (info.height, info.width, info.num_frames) == (2 * H, 2 * W, T)
    assert read_image(files["preview_png"]).shape == (2 * H, 2 * W, 3)
    assert json.loads(files["meta"].read_text())["captions"] == {"fg": "a", "bg": "b", "blend": "c"}


def test_lossless_webm_keeps_alpha_exactly(tmp_path):
    clip = _clip()
    rgba = np.concatenate([clip.fg, clip.alpha[..., None]], -1)
    back = read_rgba_video(write_webm_rgba(rgba, tmp_path / "x.webm", 8.0, lossless=True))
    assert np.abs(back[..., 3].astype(int) - clip.alpha).max() <= 1


def test_preview_layout():
    clip = _clip()
    grid = preview_frames(clip)
    assert grid.shape == (T, 2 * H, 2 * W, 3)
    assert np.array_equal(grid[:, H:, :W], clip.bg)
    assert np.array_equal(grid[:, H:, W:], clip.blend)
    assert np.array_equal(grid[:, :H, W:, 0], clip.alpha)
    opaque = clip.alpha == 255
    assert np.array_equal(grid[:, :H, :W][opaque], clip.fg[opaque])
    transparent = clip.alpha == 0
    assert set(np.unique(grid[:, :H, :W][transparent])) <= {153, 204}  # the checkerboard shows through


def test_rgba_only_options_and_errors(tmp_path):
    clip = _clip()
    result = export_clip(clip, tmp_path, ExportOptions(rgba_formats=("webm",), preview=False))
    assert "fg_rgba_mov" not in result.files and "preview" not in result.files
    with pytest.raises(ExportError, match="choose from png, webm, mov"):
        ExportOptions(rgba_formats=("gif",))
    with pytest.raises(ValueError, match="no alpha channel"):
        read_rgba_video(result.files["bg"])
