"""The vLLM path of caption and fg_check on CPU: the one-line error without vllm, the engine and sampling
configuration, the prompts (the transformers path's own) and the mapping of answers back to rows, with a stand-in
for the vllm package that records what it is given."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from data_engine.stages import caption as caption_module
from data_engine.stages import foreground_check as fg_module
from data_engine.stages.base import Resources
from data_engine.stages.caption import DEFAULT_PROMPTS, CaptionStage, uniform_indices
from data_engine.stages.foreground_check import ANSWER_WORDS, ForegroundCheckStage, highlight, visible_frames
from data_engine.stages.models import QWEN_VL, build_qwen_vl
from data_engine.stages.vllm_engine import VllmSettings, vllm_inputs
from data_engine.synthetic import SyntheticConfig, synthetic_clip

WEIGHTS = Path("/weights/qwen2.5-vl-7b-instruct")
BACKENDS = list(QWEN_VL)


def rows() -> list[dict]:
    out = []
    for i in range(2):
        clip = synthetic_clip(SyntheticConfig(num_frames=6, height=64, width=64), i)
        out.append({"key": f"c-{i:05d}", "frames": clip.blend, "mask": clip.alpha, "bg": clip.bg, "fps": 8.0,
                    "tag": ("dog", "ball")[i], "scores": {}})
    return out


def test_choosing_vllm_without_it_fails_in_one_line_naming_the_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vllm" else real_find_spec(name, *a))
    for make in (lambda: CaptionStage(engine="vllm"), lambda: ForegroundCheckStage(engine="vllm")):
        with pytest.raises(ValueError) as err:
            make()
        assert "engine vllm needs the vllm package: `pip install \"layerflow[vllm]\"`" in str(err.value)
        assert "\n" not in str(err.value)


def test_engine_and_sampling_settings():
    settings = VllmSettings(str(WEIGHTS), "bfloat16", "image", 3, 0.7262, 8, choices=("Yes", "No"))
    assert settings.engine_args() == {"model": str(WEIGHTS), "dtype": "bfloat16", "limit_mm_per_prompt": {"image": 3},
                                      "gpu_memory_utilization": 0.7262, "seed": 0}
    assert settings.sampling_args() == {"temperature": 0.0, "max_tokens": 8, "min_tokens": 0,
                                        "structured_outputs": {"choice": ["Yes", "No"]}}
    free = VllmSettings(str(WEIGHTS), "bfloat16", "video", 1, 0.5, 120, 1)
    assert "structured_outputs" not in free.sampling_args() and free.sampling_args()["min_tokens"] == 1
    video = np.zeros((4, 8, 8, 3), np.uint8)
    assert vllm_inputs(["p"], [video], "video") == [{"prompt": "p", "multi_modal_data": {"video": video}}]


class FakeLLM:
    """Records the engine arguments and each generate call; answers from a script, in order."""

    made: list[FakeLLM] = []
    script: list[str] = []

    def __init__(self, **kwargs):
        self.kwargs, self.calls = kwargs, []
        FakeLLM.made.append(self)

    def generate(self, inputs, sampling, use_tqdm=True):
        self.calls.append((inputs, sampling))
        answers = [FakeLLM.script.pop(0) for _ in inputs]
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=a)]) for a in answers]


@pytest.fixture(params=BACKENDS)
def fake_vllm(request, monkeypatch):
    """The stand-in vllm package, and the tiny processor of the backend under test (the release processor's
    stand-in: same classes, same chat layout)."""
    vllm = types.ModuleType("vllm")
    vllm.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    vllm.LLM = FakeLLM
    vllm.SamplingParams = lambda **kwargs: ("SamplingParams", kwargs)
    params = types.ModuleType("vllm.sampling_params")
    params.StructuredOutputsParams = lambda **kwargs: ("StructuredOutputsParams", kwargs)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", params)
    _, processor = build_qwen_vl("tiny", request.param)
    asked = []
    for module in (caption_module, fg_module):
        monkeypatch.setattr(module, "qwen_vl_release_processor",
                            lambda backend: asked.append(backend) or (processor, WEIGHTS))
    FakeLLM.made.clear()
    yield request.param, processor
    assert set(asked) <= {request.param}  # each stage loads its own backend's release


def test_caption_through_vllm_sends_the_transformers_prompts_and_maps_rows_back(fake_vllm):
    backend, processor = fake_vllm
    stage = CaptionStage(Resources(num_gpus=0.6353), preset="full", backend=backend, engine="vllm", max_frames=4,
                         generate_batch=4, dtype="bfloat16")
    stage.ensure_setup()
    (llm,) = FakeLLM.made
    assert llm.kwargs == {"model": str(WEIGHTS), "dtype": "bfloat16", "limit_mm_per_prompt": {"video": 1},
                          "gpu_memory_utilization": 0.6353, "seed": 0}
    FakeLLM.script = [f"caption {i}" for i in range(6)]
    data = rows()
    out = stage.process_batch(data)
    assert [len(inputs) for inputs, _ in llm.calls] == [4, 2]  # generate_batch per call, as on transformers
    assert llm.calls[0][1] == ("SamplingParams", {"temperature": 0.0, "max_tokens": 120, "min_tokens": 1})
    sent = [p for inputs, _ in llm.calls for p in inputs]
    layers = [(row, layer) for row in data for layer in ("fg", "bg", "blend")]
    for p, (_row, layer) in zip(sent, layers):
        assert p["prompt"] == processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": DEFAULT_PROMPTS[layer]}]}],
            add_generation_prompt=True, tokenize=False)
    blend = sent[2]["multi_modal_data"]["video"]
    if backend == "qwen3-vl":  # vLLM's Qwen3-VL processor needs each video's metadata to write its frame times
        blend, metadata = blend
        assert metadata == {"total_num_frames": 6, "fps": 8.0, "duration": 0.75, "frames_indices": [0, 2, 3, 5],
                            "do_sample_frames": False}
    assert np.array_equal(blend, data[0]["frames"][uniform_indices(6, 4)])
    assert [r["captions"] for r in out] == [{"fg": "caption 0", "bg": "caption 1", "blend": "caption 2"},
                                            {"fg": "caption 3", "bg": "caption 4", "blend": "caption 5"}]


def test_fg_check_through_vllm_constrains_answers_and_maps_verdicts(fake_vllm):
    stage = ForegroundCheckStage(Resources(num_gpus=0.7262), preset="full", backend=fake_vllm[0], engine="vllm",
                                 num_frames=2, constrain_answer=True)
    stage.ensure_setup()
    (llm,) = FakeLLM.made
    assert llm.kwargs["limit_mm_per_prompt"] == {"image": 2}
    FakeLLM.script = ["Yes", " no "]
    data = rows()
    out = stage.process_batch(data)
    ((inputs, sampling),) = llm.calls
    assert sampling == ("SamplingParams", {"temperature": 0.0, "max_tokens": 8, "min_tokens": 0,
                                           "structured_outputs": ("StructuredOutputsParams",
                                                                  {"choice": list(ANSWER_WORDS)})})
    assert "'dog'" in inputs[0]["prompt"] and "'ball'" in inputs[1]["prompt"]
    idx = visible_frames(data[0]["mask"], 2)
    expected = [highlight(data[0]["frames"][i], data[0]["mask"][i], 0.25) for i in idx]
    assert all(np.array_equal(a, b) for a, b in zip(inputs[0]["multi_modal_data"]["image"], expected))
    assert [r["key"] for r in out] == ["c-00000"]  # the "no" is dropped, as on transformers
    assert out[0]["scores"]["fg_check"] == {"verdict": "yes", "answer": "Yes"}
    assert data[1]["scores"]["dropped"] == ["fg_check: 'ball' is not a foreground object (answer 'no')"]


def test_vllm_needs_the_full_preset_and_a_gpu(fake_vllm):
    with pytest.raises(ValueError, match="engine vllm loads the model from its weights folder: use preset full"):
        CaptionStage(engine="vllm", preset="tiny")
    with pytest.raises(ValueError, match="runs on a GPU"):
        ForegroundCheckStage(Resources(num_gpus=0), engine="vllm").ensure_setup()
