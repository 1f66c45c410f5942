import io

import av
import numpy as np
import pytest
from av.video.reformatter import ColorRange
from PIL import Image

from data_engine.synthetic import SyntheticConfig, synthetic_clip
from data_engine.video_io import (
    VideoDecodeError,
    decode_png,
    decode_video,
    encode_alpha,
    encode_png,
    encode_video,
    probe_video,
    psnr,
    read_image,
)

CFG = SyntheticConfig(num_frames=8, height=120, width=176, seed=3)


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip(CFG, 0)


def test_colour_round_trip_psnr_at_default_quality(clip):
    for name in ("fg", "bg", "blend"):
        decoded = decode_video(encode_video(clip.layer(name), clip.fps))
        assert decoded.shape == clip.layer(name).shape
        assert psnr(decoded, clip.layer(name)) >= 40.0, name


def test_alpha_lossless_is_exact_and_default_within_two_levels(clip):
    exact = decode_video(encode_alpha(clip.alpha, clip.fps, lossless=True), grey=True)
    assert np.array_equal(exact, clip.alpha)
    lossy = decode_video(encode_alpha(clip.alpha, clip.fps), grey=True)
    assert np.abs(lossy.astype(int) - clip.alpha).max() <= 2
    soft = (clip.alpha > 0) & (clip.alpha < 255)
    assert soft.any(), "the synthetic matte must have fractional (anti-aliased) values"


def test_alpha_lossless_exact_on_noise():
    noise = np.random.default_rng(0).integers(0, 256, size=(3, 32, 48), dtype=np.uint8)
    assert np.array_equal(decode_video(encode_alpha(noise, 8, lossless=True), grey=True), noise)


def test_odd_sizes_are_padded_and_frames_kept():
    frames = np.random.default_rng(1).integers(0, 256, size=(3, 31, 45, 3), dtype=np.uint8)
    out = decode_video(encode_video(frames, 8))
    assert out.shape == (3, 32, 46, 3)


def test_probe_reports_size_fps_and_frames(clip, tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(encode_video(clip.blend, 12.0))
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames, info.codec) == (176, 120, 8, "h264")
    assert info.fps == pytest.approx(12.0)
    assert info.duration == pytest.approx(8 / 12.0, rel=0.05)
    assert not info.variable_frame_rate


def test_png_round_trip_is_exact():
    img = np.random.default_rng(2).integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    assert np.array_equal(decode_png(encode_png(img)), img)


@pytest.mark.parametrize(
    "content, match",
    [(b"", "zero-byte"), (b"this is not a video", "truncated or corrupt video")],
)
def test_bad_files_raise_one_line_naming_the_file(tmp_path, content, match):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoDecodeError, match=match) as err:
        decode_video(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_video_is_reported(tmp_path, clip):
    data = encode_video(clip.blend, 8)
    path = tmp_path / "trunc.mp4"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoDecodeError, match="trunc.mp4"):
        decode_video(path)


def test_an_unreadable_image_is_named_without_a_memory_address(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG garbage")
    with pytest.raises(VideoDecodeError, match="broken.png: not a readable image") as err:
        read_image(path)
    assert "0x" not in str(err.value) and " at " not in str(err.value)


def test_a_16_bit_grey_png_is_scaled_not_clipped():
    """Pillow's convert("L") clips 16-bit levels above 255, making a soft matte binary."""
    levels = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)  # 0, 257, ... 65535: exactly 0..255
    buf = io.BytesIO()
    Image.fromarray(levels).save(buf, format="PNG")
    assert np.array_equal(decode_png(buf.getvalue(), grey=True), np.arange(256, dtype=np.uint8).reshape(16, 16))


def test_streams_written_here_say_their_range():
    alpha = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (2, 16, 1))
    with av.open(io.BytesIO(encode_alpha(alpha, 8, lossless=True))) as container:
        assert next(container.decode(video=0)).color_range == ColorRange.JPEG
    assert np.array_equal(decode_video(encode_alpha(alpha, 8, lossless=True), grey=True), alpha)
    with av.open(io.BytesIO(encode_video(np.zeros((2, 16, 16, 3), np.uint8), 8))) as container:
        assert next(container.decode(video=0)).color_range == ColorRange.MPEG
