"""Text alignment: ViCLIP assembled from open_clip parts (parity with CLIP where it must agree, temporal
embedding per frame, checkpoint key conversion) and the labelled CLIP fallback."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.errors import EvaluationError
from evaluation.frames import clip_preprocess
from evaluation.metrics.text_alignment import TextAlignment
from evaluation.models.clip import clip_tokenizer
from evaluation.models.viclip import build_viclip
from model.numerics import FLOAT32_EPS, assert_float32_close


def _video(t=4, seed=0):
    return torch.randn(1, t, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def test_viclip_single_frame_equals_clip_image_encoder():
    """One frame gets the mean temporal embedding (zero here): ViCLIP's vision tower is then CLIP's."""
    m = build_viclip(tiny=True, seed=0)
    frame = _video(1)
    with torch.no_grad():
        assert_float32_close(m.encode_video(frame), m.clip.encode_image(frame[0]), ulps=64, what="one-frame ViCLIP")
        m.temporal_positional_embedding.normal_(generator=torch.Generator().manual_seed(3))
        assert (m.encode_video(frame) - m.clip.encode_image(frame[0])).abs().max() > 1e-3


def test_viclip_temporal_embedding_is_per_frame():
    m = build_viclip(tiny=True, seed=0)
    with torch.no_grad():
        m.temporal_positional_embedding.normal_(generator=torch.Generator().manual_seed(1))
        x = _video(8)
        base = m.encode_video(x)
        reversed_frames = m.encode_video(x.flip(1))
        m.temporal_positional_embedding.copy_(m.temporal_positional_embedding.flip(1))
        both_reversed = m.encode_video(x.flip(1))
    assert (base - reversed_frames).abs().max() > 1e-3
    assert_float32_close(both_reversed, base, ulps=256, what="frames and embeddings reversed together")


def test_viclip_checkpoint_keys_load(tmp_path):
    """A checkpoint in ViCLIP's own layout ({'model': ...}, Conv3d patch kernel, 'temp') loads strictly."""
    src = build_viclip(tiny=True, seed=5)
    sd = {"temp": torch.tensor(0.01)}
    for k, v in src.state_dict().items():
        if k == "temporal_positional_embedding":
            sd["vision_encoder.temporal_positional_embedding"] = v
        elif k.startswith("clip.visual."):
            sd["vision_encoder." + k[len("clip.visual."):]] = v[:, :, None] if k.endswith("conv1.weight") else v
        elif k != "clip.logit_scale":
            sd["text_encoder." + k[len("clip."):]] = v
    path = tmp_path / "viclip.pth"
    torch.save({"model": sd}, path)
    loaded = build_viclip(path, tiny=True, seed=9)
    x = _video(8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_video(x), src.encode_video(x))


def test_viclip_tokenizer_truncates_to_32_with_end_token():
    tok = clip_tokenizer(32)
    ids = tok(["word " * 100])[0]
    assert ids.shape == (32,) and int(ids[-1]) == tok.eot_token_id and int(ids[0]) == tok.sot_token_id


def test_scores_and_labels_of_both_backends():
    frames = np.random.default_rng(0).integers(0, 256, (10, 64, 96, 3), dtype=np.uint8)
    clip = TextAlignment("clip", random_init=True, tiny=True)
    assert clip.variant.startswith("clip-fallback")
    s = clip.score_video(frames, prompt="a red car")
    assert s.details["frames"] == [0, 1, 2, 3, 5, 6, 7, 8]
    with torch.no_grad():
        img = torch.nn.functional.normalize(
            clip.model.encode_image(clip_preprocess(frames[s.details["frames"]], resize_uint8=True)), dim=-1)
    text = clip.text_features("a red car")
    assert s.value == pytest.approx(float((img @ text.T).mean()), abs=16 * FLOAT32_EPS)  # a cosine: scale 1
    vic = TextAlignment("viclip", random_init=True, tiny=True)
    assert vic.variant.startswith("viclip")
    assert (vic.tokenizer.context_length, clip.tokenizer.context_length) == (32, 77)  # each model's text context
    assert -1.0 <= vic.score_video(frames, prompt="a red car").value <= 1.0
    with pytest.raises(EvaluationError, match="empty prompt"):
        vic.score_video(frames, prompt="  ")
