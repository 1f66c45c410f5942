"""The vLLM path of the Qwen-VL stages (`engine: vllm` in the options of `caption` and `fg_check`, either backend:
`qwen2.5-vl` or `qwen3-vl`).

The stages build the same chat-template prompts and frames as on the transformers path and map the answers back
into the same rows; only the `generate` call changes: one vLLM `LLM.generate` per batch, greedy (temperature 0)
like the transformers path, and `constrain_answer` as vLLM's structured-output choice of the answer words. A
Qwen3-VL video goes with its metadata (vLLM's Qwen3-VL processor requires it): the frame times it writes into the
prompt are then the clip's, as on the transformers path. vLLM
preallocates its share of the GPU: the stage's planned GPU fraction (data_engine/engine/placement.py), so it takes
exactly the memory the plan gave the actor.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np

ENGINES = ("transformers", "vllm")
VLLM_INSTALL = 'pip install "layerflow[vllm]"'


def check_engine(stage: str, engine: str, preset: str) -> None:
    """A one-line error for an engine this install or preset cannot run."""
    if engine not in ENGINES:
        raise ValueError(f"{stage} engine must be one of {ENGINES}, got {engine!r}")
    if engine != "vllm":
        return
    if importlib.util.find_spec("vllm") is None:
        raise ValueError(f"{stage} engine vllm needs the vllm package: `{VLLM_INSTALL}` (or use engine: transformers)")
    if preset != "full":
        raise ValueError(f"{stage} engine vllm loads the model from its weights folder: use preset full")


@dataclass(frozen=True)
class VllmSettings:
    """What the vLLM engine and its sampling are built from."""

    model: str  # the weights folder
    dtype: str
    media: str  # "video" (caption) or "image" (fg_check)
    per_prompt: int  # most media items in one prompt
    gpu_share: float  # of one GPU, as planned
    max_new_tokens: int
    min_new_tokens: int = 0
    choices: tuple[str, ...] = ()  # the only answers allowed (constrained decoding); empty: free text
    seed: int = 0

    def engine_args(self) -> dict[str, Any]:
        return {"model": self.model, "dtype": self.dtype, "limit_mm_per_prompt": {self.media: self.per_prompt},
                "gpu_memory_utilization": self.gpu_share, "seed": self.seed}

    def sampling_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"temperature": 0.0, "max_tokens": self.max_new_tokens,
                                "min_tokens": self.min_new_tokens}
        if self.choices:
            args["structured_outputs"] = {"choice": list(self.choices)}
        return args


Media = np.ndarray | list[np.ndarray] | tuple[np.ndarray, dict[str, Any]]


def vllm_inputs(texts: list[str], media: list[Media], kind: str) -> list[dict[str, Any]]:
    """One vLLM prompt per (chat-template text, video (alone or with its metadata) or list of images)."""
    return [{"prompt": text, "multi_modal_data": {kind: item}} for text, item in zip(texts, media)]


class VllmGenerator:
    """A vLLM engine in the stage's actor; `generate` answers a batch of prompts in one call, in order."""

    def __init__(self, settings: VllmSettings) -> None:
        import vllm
        from vllm.sampling_params import StructuredOutputsParams

        self.settings = settings
        self.llm = vllm.LLM(**settings.engine_args())
        args = settings.sampling_args()
        if "structured_outputs" in args:
            args["structured_outputs"] = StructuredOutputsParams(**args["structured_outputs"])
        self.sampling = vllm.SamplingParams(**args)

    def generate(self, texts: list[str], media: list[Media]) -> list[str]:
        outputs = self.llm.generate(vllm_inputs(texts, media, self.settings.media), self.sampling, use_tqdm=False)
        return [out.outputs[0].text for out in outputs]
