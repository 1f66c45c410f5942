"""Caption stage: one caption per layer (fg on mid-grey, bg, blend), each from its own video.

Reads the layers from `clip` when `compose` has run (the chain's order: compose, then caption), else from
`frames` (the blend), `mask` and `bg` (fg = `over_grey(frames, mask)`); writes `captions` = {"fg", "bg", "blend"},
`scores["caption"]`, and the captions into `clip` when present. A layer whose caption comes back empty
fails the row (a sample with a missing caption is worse than no sample). A clip with K foregrounds (a grouped
row, `layers.group_objects`) also gets `fg_1` .. `fg_K-1`, each captioned alone on mid-grey with the fg prompt.

Backends:
- `qwen2.5-vl` (default, Qwen2.5-VL-7B-Instruct) and `qwen3-vl` (Qwen3-VL-8B-Instruct): transformers, each layer
  passed as a video of up to `max_frames` uniformly sampled frames, with the layer's prompt from the options.
  Qwen3-VL also reads each frame pair's time as text in the prompt: its videos carry their fps and frame indices.
  The layers of all the clips in a batch are captioned `generate_batch` at a time, left-padded, one `generate`
  call each: under greedy decoding the captions are the ones a batch of one gives. `engine: vllm` runs the same
  prompts through vLLM instead (data_engine/stages/vllm_engine.py).
- `cogvlm2`: THUDM's CogVLM2 video caption model from a local snapshot. Its modelling code ships with the weights,
  so it loads only with `trust_remote_code: true`; frames are sampled as its demo does (`cogvlm2_frames`: 24
  uniformly spaced frames for strategy "base", one per second up to 24 for "chat"). That code targets older
  transformers releases: run this stage in its own Ray `runtime_env` if the shared environment is newer. Its
  remote `build_conversation_input_ids` builds one unpadded prompt, so it captions one layer per `generate` call.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from data_engine.schema import (
    CAPTIONED_LAYERS,
    Captions,
    captioned_layer_names,
    fg_name,
    foreground_index,
    over_grey,
    printable_text,
)
from data_engine.stages.base import CAPTIONED, FINISHED, Resources, Row, Stage, StageError
from data_engine.stages.grouped import OBJECTS, is_grouped
from data_engine.stages.masks import matte_of
from data_engine.stages.models import (
    COGVLM2_WEIGHTS,
    QWEN_VL,
    actor_gpu_gib,
    build_cogvlm2,
    build_qwen_vl,
    check_preset,
    device_for,
    qwen_vl,
    qwen_vl_release_processor,
)
from data_engine.stages.vllm_engine import VllmGenerator, VllmSettings, check_engine

BACKENDS = (*QWEN_VL, "cogvlm2")
DEFAULT_PROMPTS = {
    "fg": "The video shows one object on a plain grey background. Describe the object, its appearance and its "
          "motion in one or two sentences. Do not mention the grey background.",
    "bg": "Describe the scene of this video in one or two sentences: the place, the environment and any camera "
          "motion.",
    "blend": "Describe this video in one or two sentences: the main subject, what it does, and the scene.",
}
COGVLM2_MAX_FRAMES = 24
# Working set per video in one generate call: Qwen2.5-VL's prefill of a 16-frame video (~4k visual tokens) and a
# 120-token KV cache (benchmarks/perception.py); a batch holds `generate_batch` of them at once. Qwen3-VL is given
# the same figure, not measured (as in foreground_check.py).
WORKING_GIB_PER_VIDEO = 3.0


def uniform_indices(num_frames: int, count: int) -> list[int]:
    return np.linspace(0, num_frames - 1, min(count, num_frames)).round().astype(int).tolist()


def cogvlm2_frames(num_frames: int, fps: float, strategy: str = "base") -> list[int]:
    """Frame indices as the CogVLM2 caption demo picks them ("base": 24 uniform; "chat": the frame nearest each
    whole second, at most 24)."""
    if strategy == "base":
        return np.linspace(0, num_frames - 1, COGVLM2_MAX_FRAMES, dtype=int).tolist()
    if strategy != "chat":
        raise ValueError(f"cogvlm2 frame strategy must be 'base' or 'chat', got {strategy!r}")
    times = np.arange(num_frames) / fps
    picks = [int(np.argmin(np.abs(times - s))) for s in range(int(round(times[-1])) + 1)]
    return picks[:COGVLM2_MAX_FRAMES]


@dataclass(frozen=True)
class CaptionOptions:
    preset: str = "full"
    backend: str = "qwen2.5-vl"
    prompts: dict = field(default_factory=lambda: dict(DEFAULT_PROMPTS))
    max_frames: int = 16
    max_new_tokens: int = 120
    min_new_tokens: int = 1
    trust_remote_code: bool = False
    cogvlm2_strategy: str = "base"
    dtype: str = "bfloat16"
    seed: int = 0
    # Layered sources (synthetic, official import, copy-paste) arrive with their own captions: keep them.
    keep_existing: bool = True
    # Layers (of all the clips in a batch) per `generate` call: throughput, at the cost of GPU memory (the stage's
    # `gpu_memory_gib` grows with it).
    generate_batch: int = 8
    engine: str = "transformers"  # or "vllm" (Qwen-VL backends, full preset, on a GPU)

    def __post_init__(self) -> None:
        check_preset(self.preset)
        if self.backend not in BACKENDS:
            raise ValueError(f"caption backend must be one of {BACKENDS}, got {self.backend!r}")
        missing = [layer for layer in CAPTIONED_LAYERS if not self.prompts.get(layer)]
        if missing:
            raise ValueError(f"caption prompts need a prompt for each of {CAPTIONED_LAYERS}; missing {missing}")
        if self.generate_batch < 1:
            raise ValueError(f"caption generate_batch must be >= 1, got {self.generate_batch}")
        check_engine("caption", self.engine, self.preset)
        if self.engine == "vllm" and self.backend not in QWEN_VL:
            raise ValueError(f"caption engine vllm runs the backends {tuple(QWEN_VL)}, not {self.backend!r}")
        if self.backend == "cogvlm2" and self.preset == "tiny":
            raise ValueError("the cogvlm2 caption backend has no tiny preset; use backend: qwen2.5-vl")


class CaptionStage(Stage):
    name = "caption"
    accepts_finished = True  # runs after compose: reads and completes the finished `clip`
    reads = frozenset({"frames", "mask", "bg"})  # of a row not yet finished
    writes = frozenset({"captions", "scores"})
    default_resources = Resources(num_cpus=1.0, num_gpus=0.3, batch_size=2, retries=1)
    Options = CaptionOptions

    @classmethod
    def has_work(cls, opts: CaptionOptions, fields: frozenset[str]) -> bool:
        return not (FINISHED in fields and CAPTIONED in fields and opts.keep_existing)

    @classmethod
    def weights(cls, opts: CaptionOptions) -> tuple[str, ...]:
        if opts.backend == "cogvlm2":
            return (COGVLM2_WEIGHTS,)
        return () if opts.preset == "tiny" else (qwen_vl(opts.backend).weights,)

    @classmethod
    def gpu_memory_gib(cls, opts: CaptionOptions) -> float:
        if opts.backend == "cogvlm2":  # one video per generate call
            return actor_gpu_gib(opts.preset, {COGVLM2_WEIGHTS: opts.dtype}, WORKING_GIB_PER_VIDEO)
        return actor_gpu_gib(opts.preset, {qwen_vl(opts.backend).weights: opts.dtype},
                             WORKING_GIB_PER_VIDEO * opts.generate_batch)

    def setup(self) -> None:
        self.device = device_for(self.resources.num_gpus)
        if self.opts.engine == "vllm":
            if self.resources.num_gpus <= 0:
                raise ValueError("caption engine vllm runs on a GPU: give the stage num_gpus > 0")
            self.processor, path = qwen_vl_release_processor(self.opts.backend)
            self.vllm = VllmGenerator(VllmSettings(
                str(path), self.opts.dtype, "video", 1, self.resources.num_gpus, self.opts.max_new_tokens,
                self.opts.min_new_tokens, seed=self.opts.seed))
            return
        if self.opts.backend == "cogvlm2":
            self.model, self.tokenizer = build_cogvlm2(self.opts.trust_remote_code, dtype=self.opts.dtype)
        else:
            self.model, self.processor = build_qwen_vl(self.opts.preset, self.opts.backend, dtype=self.opts.dtype,
                                                       seed=self.opts.seed)
            # generate continues every row from its last position: the padding must come before the prompt.
            self.processor.tokenizer.padding_side = "left"
        self.model.to(self.device)

    def sampled(self, video: np.ndarray, fps: float) -> tuple[np.ndarray, dict]:
        """The frames the model sees and where they come from (transformers' `VideoMetadata` fields)."""
        idx = uniform_indices(len(video), self.opts.max_frames)
        if len(idx) % 2:  # Qwen-VL groups frames in temporal pairs
            idx.append(idx[-1])
        return video[idx], {"total_num_frames": len(video), "fps": fps, "duration": len(video) / fps,
                            "frames_indices": idx}

    def _qwen(self, requests: list[tuple[np.ndarray, str, float]]) -> list[str]:
        """One left-padded `generate` call for all the (video, layer, fps) requests."""
        import torch
        from transformers.video_utils import VideoMetadata

        clips, sources = zip(*(self.sampled(video, fps) for video, _, fps in requests))
        texts = [self.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": self.prompt(layer)}]}],
            add_generation_prompt=True, tokenize=False) for _, layer, _ in requests]
        timestamps = qwen_vl(self.opts.backend).timestamps
        if self.opts.engine == "vllm":
            # vLLM's Qwen3-VL takes each video as (frames, metadata), the frames already sampled.
            media = [(c, {**m, "do_sample_frames": False}) for c, m in zip(clips, sources)] if timestamps else clips
            return self.vllm.generate(texts, list(media))
        videos_kwargs = {"do_sample_frames": False}
        if timestamps:
            videos_kwargs["video_metadata"] = [VideoMetadata(**m) for m in sources]
        inputs = self.processor(text=texts, videos=list(clips), padding=True, return_tensors="pt",
                                videos_kwargs=videos_kwargs).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.opts.max_new_tokens,
                                      min_new_tokens=self.opts.min_new_tokens, do_sample=False)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def _cogvlm2(self, video: np.ndarray, prompt: str, fps: float) -> str:
        import torch

        frames = torch.from_numpy(video[cogvlm2_frames(len(video), fps, self.opts.cogvlm2_strategy)])
        inputs = self.model.build_conversation_input_ids(tokenizer=self.tokenizer, query=prompt,
                                                         images=[frames.permute(3, 0, 1, 2)], history=[],
                                                         template_version=self.opts.cogvlm2_strategy)
        dtype = next(self.model.parameters()).dtype
        batch = {
            "input_ids": inputs["input_ids"].unsqueeze(0).to(self.device),
            "token_type_ids": inputs["token_type_ids"].unsqueeze(0).to(self.device),
            "attention_mask": inputs["attention_mask"].unsqueeze(0).to(self.device),
            "images": [[inputs["images"][0].to(self.device, dtype)]],
        }
        with torch.inference_mode():
            out = self.model.generate(**batch, max_new_tokens=self.opts.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        return self.tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)

    def prompt(self, layer: str) -> str:
        return self.opts.prompts["fg" if foreground_index(layer) is not None else layer]  # fg_k: the fg prompt

    def caption_all(self, requests: list[tuple[np.ndarray, str, float]]) -> list[str]:
        """The caption of each (video, layer, fps), `generate_batch` per `generate` call (cogvlm2: one)."""
        if self.opts.backend == "cogvlm2":
            texts = [self._cogvlm2(video, self.prompt(layer), fps) for video, layer, fps in requests]
        else:
            size = self.opts.generate_batch
            texts = [text for start in range(0, len(requests), size)
                     for text in self._qwen(requests[start:start + size])]
        return [printable_text(t) for t in texts]

    @staticmethod
    def layers(row: Row) -> dict[str, np.ndarray]:
        """The captioned layers, in `captioned_layer_names(K)` order: fg, bg, blend, then fg_1 .. fg_K-1."""
        clip = row.get("clip")
        if clip is not None:
            return {name: clip.layer(name) for name in captioned_layer_names(clip.num_foregrounds)}
        frames, mask, bg = row.get("frames"), row.get("mask"), row.get("bg")
        if frames is None or mask is None or bg is None:
            raise StageError("caption needs a composed clip, or frames, mask and bg (run segment and inpaint)")
        if is_grouped(row):
            fgs = [over_grey(frames, matte_of(o)) for o in row[OBJECTS]]
            return {"fg": fgs[0], "bg": bg, "blend": frames, **{fg_name(k): fg for k, fg in enumerate(fgs[1:], 1)}}
        fg = row.get("fg")
        return {"fg": fg if fg is not None else over_grey(frames, matte_of(row)), "bg": bg, "blend": frames}

    @staticmethod
    def captioned(clip) -> bool:
        """Whether a finished clip already has a caption for every layer (one per foreground included)."""
        return clip.captions.num_foregrounds == clip.num_foregrounds and all(clip.captions.as_dict().values())

    def process_batch(self, rows: list[Row]) -> list[Row]:
        work: list[tuple[Row, dict[str, np.ndarray] | StageError | None]] = []  # None: keeps its captions
        for row in rows:
            clip = row.get("clip")
            if self.opts.keep_existing and clip is not None and self.captioned(clip):
                work.append((row, None))
                continue
            try:
                work.append((row, self.layers(row)))
            except StageError as exc:
                work.append((row, exc))
        requests = [(video, layer, float(row.get("fps", 8.0)))
                    for row, layers in work if isinstance(layers, dict) for layer, video in layers.items()]
        texts = iter(self.caption_all(requests))
        out = []
        for row, layers in work:
            if not isinstance(layers, dict):
                out.append(row if layers is None else self.failed(row, layers))
                continue
            captions = {layer: next(texts) for layer in layers}
            empty = [layer for layer, text in captions.items() if not text]
            out.append(self.failed(row, StageError(f"caption: empty caption for layer(s) {empty}")) if empty
                       else self.captioned_row(row, captions))
        return out

    def captioned_row(self, row: Row, captions: dict[str, str]) -> Row:
        score = {"backend": self.opts.backend}
        done = {**row, "captions": captions, "scores": {**row.get("scores", {}), "caption": score}}
        clip = row.get("clip")
        if clip is not None:
            done["clip"] = replace(clip, captions=Captions.from_dict(captions),
                                   scores={**clip.scores, "caption": score})
        return done
