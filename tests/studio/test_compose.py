"""`layerflow compose`: composing a clip's true layers gives back its blend, and known transforms give known pixels."""
from __future__ import annotations

import numpy as np
import pytest

from data_engine.schema import MID_GREY, LayeredClip, composite, composite_layers, over_grey
from data_engine.synthetic import SyntheticConfig, synthetic_clip, synthetic_truth
from data_engine.video_io import decode_video, encode_png, read_frame_folder_rgba
from layerflow.studio.clips import read_sample_clip
from layerflow.studio.compose import ComposeError, Composition, Transform, compose
from layerflow.studio.compose_cli import main as compose_main
from model.export import ExportOptions, export_clip

WORLD = dict(num_clips=2, num_frames=4, height=24, width=32)


@pytest.mark.parametrize("objects", [1, 3])
def test_composing_the_true_layers_reproduces_the_blend(objects):
    for index in range(2):
        clip = synthetic_clip(SyntheticConfig(**WORLD, num_objects=objects), index)
        again = compose(clip)
        error = np.abs(again.blend.astype(int) - clip.blend.astype(int))
        assert error.max() <= 1, (objects, index, error.max())
        for name in clip.layer_names:
            assert np.array_equal(again.layer(name), clip.layer(name)) or name == "blend", name


def _square_clip(frames: int = 3) -> LayeredClip:
    """An opaque red 2x2 square at rows 2-3, columns 4-5 of an 8x10 frame over a blue background."""
    alpha = np.zeros((frames, 8, 10), np.uint8)
    alpha[:, 2:4, 4:6] = 255
    red = np.zeros((frames, 8, 10, 3), np.uint8)
    red[..., 0] = 200
    bg = np.zeros((frames, 8, 10, 3), np.uint8)
    bg[..., 2] = 180
    return LayeredClip(key="square", fg=over_grey(red, alpha), alpha=alpha, bg=bg, blend=composite(red, alpha, bg))


def test_a_translation_moves_the_pixels():
    clip = _square_clip()
    moved = compose(clip, Composition(transforms={0: Transform(dx=3, dy=-1)}))
    want = np.zeros_like(clip.alpha)
    want[:, 1:3, 7:9] = 255
    assert np.array_equal(moved.alpha, want)
    assert (moved.blend[want == 255] == [200, 0, 0]).all() and (moved.blend[want == 0] == [0, 0, 180]).all()
    assert (moved.fg[want == 0] == MID_GREY).all()


def test_scale_opacity_and_time_offset_give_known_pixels():
    clip = _square_clip()
    # Scale 2 about the frame centre (4.5, 3.5): output x samples source (x - 4.5) / 2 + 4.5 bilinearly, so column
    # 3 reads 3.75 (3/4 of column 4's coverage), column 2 reads 3.25 (1/4); rows likewise about 3.5.
    big = compose(clip, Composition(transforms={0: Transform(scale=2.0)}))
    rows = np.array([0.75, 1, 1, 0.75, 0.25, 0, 0, 0])
    cols = np.array([0, 0, 0.25, 0.75, 1, 1, 0.75, 0.25, 0, 0])
    assert np.array_equal(big.alpha[1], np.rint(255 * np.outer(rows, cols)).astype(np.uint8))
    half = compose(clip, Composition(transforms={0: Transform(opacity=0.5)}))
    assert (half.alpha[:, 2:4, 4:6] == 128).all()
    assert (half.blend[:, 2, 4] == [100, 0, 90]).all()  # 0.5 * red + 0.5 * blue
    later = compose(clip, Composition(transforms={0: Transform(time_offset=1)}))
    assert later.alpha[0].max() == 0 and np.array_equal(later.alpha[1:], clip.alpha[1:])
    assert (later.blend[0] == clip.bg[0]).all()


def test_a_new_background_and_a_new_order():
    clip = synthetic_clip(SyntheticConfig(**WORLD, num_objects=2), 0)
    green = np.zeros((5, 7, 3), np.uint8)
    green[..., 1] = 150
    swapped = compose(clip, Composition(order=(1, 0), background=green))
    assert (swapped.bg == [0, 150, 0]).all()
    assert np.array_equal(swapped.alpha, clip.layer("alpha_1")) and np.array_equal(swapped.layer("alpha_1"), clip.alpha)
    assert swapped.captions.fg == clip.captions.more_fg[0] and swapped.captions.more_fg == (clip.captions.fg,)
    truth = synthetic_truth(SyntheticConfig(**WORLD, num_objects=2), 0)
    want = composite_layers([truth.rgbs[1], truth.rgbs[0]], [truth.alphas[1], truth.alphas[0]], swapped.bg)
    # composite_layers rounds after each of the two layers, compose once at the end: 2/255 apart at most.
    assert np.abs(swapped.blend.astype(int) - want).max() <= 2
    assert not np.array_equal(swapped.blend, compose(clip, Composition(background=green)).blend)
    with pytest.raises(ComposeError, match="must name each"):
        compose(clip, Composition(order=(0, 0)))


def test_the_command_writes_generate_formats(tmp_path, capsys):
    clip = synthetic_clip(SyntheticConfig(**WORLD), 0)
    export_clip(clip, tmp_path / "in", ExportOptions(rgba_formats=("png",)))
    sky = np.full((16, 16, 3), (40, 90, 200), np.uint8)
    (tmp_path / "sky.png").write_bytes(encode_png(sky))
    code = compose_main([str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                         "--background", str(tmp_path / "sky.png"),
                         "--fg-transform", "0:dx=2,opacity=1", "--rgba-formats", "png,webm"])
    assert code == 0, capsys.readouterr().err
    for name in ("fg.mp4", "alpha.mp4", "bg.mp4", "blend.mp4", "fg_rgba.webm", "preview.png", "clip.json"):
        assert (tmp_path / "out" / name).is_file(), name
    rgba = read_frame_folder_rgba(tmp_path / "out" / "fg_rgba")
    source = read_sample_clip(tmp_path / "in")
    assert np.array_equal(rgba[..., 3][:, :, 2:], source.alpha[:, :, :-2])
    bg = decode_video(tmp_path / "out" / "bg.mp4")
    assert np.abs(bg.astype(int) - [40, 90, 200]).max() <= 2
    assert compose_main([str(tmp_path / "in"), "--out", str(tmp_path / "x"), "--fg-transform", "0:size=2"]) == 2
    assert "--fg-transform '0:size=2': write K:key=value" in capsys.readouterr().err
