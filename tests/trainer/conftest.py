"""Shards for the trainer tests: synthetic layered videos plus layered-image samples, tiny sizes."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from data_engine.schema import Captions, LayeredClip, composite, over_grey, sample_key
from data_engine.shards import ShardSink
from data_engine.synthetic import SyntheticConfig, synthetic_clip
from trainer.config import DataConfig, ModelConfig

VIDEO = SyntheticConfig(num_frames=6, height=40, width=56, seed=3)


def image_clip(index: int, height: int = 36, width: int = 52) -> LayeredClip:
    rng = np.random.default_rng(index)
    rgb = rng.integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    alpha = np.zeros((1, height, width), np.uint8)
    alpha[:, height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
    bg = rng.integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    return LayeredClip(
        key=sample_key("image_test", index), fg=over_grey(rgb, alpha), alpha=alpha, bg=bg,
        blend=composite(rgb, alpha, bg), captions=Captions("a red box", "a noisy wall", "a red box by a wall"),
        fps=1.0, kind="image", origin="image", frame_range=(0, 1),
    )


def write_shards(out, n_video: int = 4, n_image: int = 2, maxcount: int = 3):
    with ShardSink(out, maxcount=maxcount) as sink:
        for i in range(n_video):
            sink.write(synthetic_clip(VIDEO, i))
        for i in range(n_image):
            sink.write(image_clip(i))
    return out


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("trainer_shards"))


def _tiny_data(shards, **changes) -> DataConfig:
    cfg = DataConfig(shards=str(shards), frames_per_layer=4, height=32, width=48, batch_size=2, num_workers=0,
                     shuffle_buffer=4, seed=11)
    return replace(cfg, **changes)


CONFIGS = Path(__file__).resolve().parents[2] / "infra" / "configs" / "train"


def tiny_config(stage: int) -> dict:
    """The shipped tiny config of a stage (what `python -m trainer --stage N --tiny` runs)."""
    return yaml.safe_load((CONFIGS / f"tiny_stage{stage}.yaml").read_text())


# The tiny configs share one network (same LoRA shape in every stage, so a stage loads the previous one's export).
TINY_MODEL = ModelConfig(**tiny_config(1)["model"]["network"], seed=0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the tiny model's ops are too small to gain from two, and on a shared 2-core machine
    two threads per process spin against each other (measured: 0.5 s vs 1-8 s per step under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_parts():
    from trainer.components import build_components

    return build_components(TINY_MODEL)


@pytest.fixture(scope="session")
def tiny_yaml():
    """tiny_yaml(stage) -> the stage's shipped tiny config as a dict."""
    return tiny_config


@pytest.fixture(scope="session")
def tiny_data():
    """tiny_data(shards, **changes) -> a DataConfig at the tiny model's size."""
    return _tiny_data


@pytest.fixture(scope="session")
def tiny_module(tiny_parts):
    """tiny_module(stage, **kw) -> a LayerFlowModule on a private copy of the session's components (built once)."""
    import copy

    from trainer.module import LayerFlowModule

    def make(stage: int, network=TINY_MODEL, **kw):
        module = LayerFlowModule(stage=stage, network=network, **kw)
        module.use_components(copy.deepcopy(tiny_parts))
        return module

    return make
