"""Exports re-open with PyAV and keep the alpha channel; the RGBA colour re-composites to the generated fg."""
from __future__ import annotations

import json

import numpy as np
import pytest

from data_engine.schema import MID_GREY, Captions, LayeredClip, composite, composite_layers, over_grey
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
    alpha = np.stack([np.clip(255 - 12 * np.hypot(xx - 20 - 4 * t, yy - 24), 0, 255)
                      for t in range(T)]).astype(np.uint8)
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
    expected = {"fg_rgba_png", "fg_rgba_webm", "fg_rgba_mov", "fg", "alpha", "bg", "blend", "preview", "preview_png",
                "meta"}
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


def _two_object_clip() -> LayeredClip:
    """_clip's object in front of a second, soft-edged blue square (foreground 1) over the same background."""
    front = _clip()
    yy, xx = np.mgrid[0:H, 0:W]
    square = np.clip(255 - 40 * np.maximum(np.abs(xx - 40), np.abs(yy - 20)) + 8 * 40, 0, 255).astype(np.uint8)
    alpha_1 = np.broadcast_to(square, (T, H, W)).copy()
    rgb_1 = np.zeros((T, H, W, 3), np.uint8)
    rgb_1[..., 0], rgb_1[..., 1], rgb_1[..., 2] = 30, 60, (yy * 4)[None]
    rgb_0 = straight_rgb(front.fg, front.alpha)
    blend = composite_layers([rgb_0, rgb_1], [front.alpha, alpha_1], front.bg)
    return LayeredClip("gen-00001-00", front.fg, front.alpha, front.bg, blend,
                       Captions("a", "b", "c", more_fg=("d",)),
                       more_layers={"fg_1": over_grey(rgb_1, alpha_1), "alpha_1": alpha_1})


def test_two_foregrounds_export_round_trip(tmp_path):
    clip = _two_object_clip()
    soft = clip.layer("alpha_1")
    assert ((soft > 0) & (soft < 255)).any()  # the second matte has a soft edge to carry through the codecs
    files = export_clip(clip, tmp_path / "out").files
    paper = {"fg_rgba_png", "fg_rgba_webm", "fg_rgba_mov", "fg", "alpha", "bg", "blend", "preview", "preview_png",
             "meta"}
    assert set(files) == paper | {"fg_1_rgba_png", "fg_1_rgba_webm", "fg_1_rgba_mov", "fg_1", "alpha_1"}
    names = {key: path.relative_to(tmp_path / "out").as_posix() for key, path in files.items()}
    assert names["fg_rgba_png"] == "fg_rgba" and names["fg_1_rgba_png"] == "fg_1_rgba"
    assert (names["fg_1_rgba_webm"], names["fg_1_rgba_mov"]) == ("fg_1_rgba.webm", "fg_1_rgba.mov")
    assert (names["fg_1"], names["alpha_1"]) == ("fg_1.mp4", "alpha_1.mp4")
    from PIL import Image

    for k, stem in enumerate(("fg_rgba", "fg_1_rgba")):
        fg, alpha = clip.layer("fg" if k == 0 else "fg_1"), clip.layer("alpha" if k == 0 else "alpha_1")
        truth = np.concatenate([straight_rgb(fg, alpha), alpha[..., None]], -1)
        pngs = sorted(files[f"{stem}_png"].glob("*.png"))
        assert np.array_equal(np.stack([np.asarray(Image.open(p)) for p in pngs]), truth), stem  # lossless
        prores = read_rgba_video(files[f"{stem}_mov"])
        assert np.abs(prores[..., 3].astype(int) - alpha).max() <= 1, stem  # 10-bit alpha
        assert psnr(prores[..., :3], truth[..., :3]) > 40, stem
        webm = read_rgba_video(files[f"{stem}_webm"])
        assert psnr(webm[..., 3], alpha) > 35, stem
    assert np.array_equal(decode_video(files["alpha_1"], grey=True), clip.layer("alpha_1"))  # lossless grey H.264
    assert not np.array_equal(clip.alpha, clip.layer("alpha_1"))  # so the line above reads the second matte
    assert psnr(decode_video(files["fg_1"]), clip.layer("fg_1")) > 35
    meta = json.loads(files["meta"].read_text())
    assert meta["num_foregrounds"] == 2 and meta["captions"] == {"fg": "a", "bg": "b", "blend": "c", "fg_1": "d"}
    info = probe_video(files["preview"])
    assert (info.height, info.width, info.num_frames) == (3 * H, 2 * W, T)
    assert np.array_equal(read_image(files["preview_png"]), preview_frames(clip)[0])


def test_preview_shows_every_layer_in_its_tile():
    """Solid colours in known places: red object 0 (front), blue object 1, green bg; every tile is exact."""
    red, blue, green = (200, 10, 10), (10, 10, 200), (10, 200, 10)
    alpha_0, alpha_1 = np.zeros((2, H, W), np.uint8), np.zeros((2, H, W), np.uint8)
    alpha_0[:, 4:12, 4:12] = 255
    alpha_1[:, 20:30, 30:50] = 255
    solid = {c: np.broadcast_to(np.array(c, np.uint8), (2, H, W, 3)) for c in (red, blue, green)}
    bg = solid[green].copy()
    blend = composite_layers([solid[red], solid[blue]], [alpha_0, alpha_1], bg)
    clip = LayeredClip("gen-00002-00", over_grey(solid[red], alpha_0), alpha_0, bg, blend,
                       more_layers={"fg_1": over_grey(solid[blue], alpha_1), "alpha_1": alpha_1})
    grid = preview_frames(clip)
    assert grid.shape == (2, 3 * H, 2 * W, 3)
    fg_0, mat_0, fg_1, mat_1 = grid[:, :H, :W], grid[:, :H, W:], grid[:, H:2 * H, :W], grid[:, H:2 * H, W:]
    assert (fg_0[:, 4:12, 4:12] == red).all() and (fg_1[:, 20:30, 30:50] == blue).all()
    assert set(np.unique(fg_0[alpha_0 == 0])) == set(np.unique(fg_1[alpha_1 == 0])) == {153, 204}  # checkerboard
    assert np.array_equal(mat_0[..., 1], alpha_0) and np.array_equal(mat_1[..., 1], alpha_1)
    assert np.array_equal(grid[:, 2 * H:, :W], bg) and np.array_equal(grid[:, 2 * H:, W:], blend)
    assert (blend[:, 4:12, 4:12] == red).all() and (blend[:, 20:30, 30:50] == blue).all()
