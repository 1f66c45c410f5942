"""Foreground check: a Qwen-VL answers whether a segmented object is a real foreground object, not background
stuff (sky, lake, road, wall...). `backend` picks the generation: `qwen2.5-vl` (default, Qwen2.5-VL-7B-Instruct)
or `qwen3-vl` (Qwen3-VL-8B-Instruct); both get the same prompt and frames and give the same rows.

Reads `frames`, `mask`, `tag`; writes `scores["fg_check"]` = {"verdict", "answer"}. The model sees `num_frames`
frames (spread over the frames where the object is visible) with everything outside the mask darkened, and the
prompt from the options (`{tag}` is filled in). The answer is parsed by `parse_yes_no`:
- yes -> the row passes; no -> the row is dropped with the reason (or kept and annotated with `on_reject: keep`);
- anything else -> the row fails with the unparseable answer as the reason: never a silent yes.
A grouped row (data_engine/stages/grouped.py) asks once per object and keeps the objects that pass (each with
`scores["fg_check"]`); the others' reasons go to the row's `scores["dropped"]`, and the row is dropped when none
passes.
The questions of all the rows (and objects) in a batch are asked `generate_batch` at a time, left-padded, one
`generate` call each: under greedy decoding the answers are the ones a batch of one gives.
`engine: vllm` asks the same questions through vLLM instead (data_engine/stages/vllm_engine.py).
`constrain_answer: true` restricts decoding to the yes/no answer tokens (`prefix_allowed_tokens_fn`); the tiny
preset needs it, since random weights never produce a parseable answer on their own.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from data_engine.stages.base import Resources, Row, Stage, StageError
from data_engine.stages.grouped import OBJECTS, is_grouped, with_objects
from data_engine.stages.models import (
    QWEN_VL,
    actor_gpu_gib,
    build_qwen_vl,
    check_preset,
    device_for,
    qwen_vl,
    qwen_vl_release_processor,
)
from data_engine.stages.vllm_engine import VllmGenerator, VllmSettings, check_engine

DEFAULT_PROMPT = (
    "These frames come from one video; the bright region is the object tagged '{tag}', everything else is dimmed. "
    "Is the bright region a distinct foreground object that could be cut out and moved (a person, animal, vehicle "
    "or thing), rather than part of the background or scenery such as sky, water, ground, road, grass, wall or "
    "floor? Answer with yes or no."
)
# Working set per question in one generate call: Qwen2.5-VL's prefill of 3 images (~1k visual tokens) and its KV
# cache (benchmarks/perception.py); a batch holds `generate_batch` of them at once. Qwen3-VL is given the same
# figure, not measured: its 32 px merged patches give fewer visual tokens per image, its KV cache per token is
# larger, both small against the prefill's activations.
WORKING_GIB_PER_QUESTION = 2.0
ANSWER_WORDS = ("Yes", "No", "yes", "no")
_YES = frozenset({"yes", "yeah", "yep", "true", "correct"})
_NO = frozenset({"no", "nope", "false", "incorrect"})
_ANSWER_IS = re.compile(r"\banswer\s*(?:is|:)\s*\W*(yes|no)\b", re.IGNORECASE)


def parse_yes_no(text: str) -> bool | None:
    """True for a yes, False for a no, None when the answer says neither clearly ("yes/no", "maybe", noise).

    The first word decides ("Yes, it is a dog." / "No."), unless the second word contradicts it; otherwise an
    explicit "the answer is yes|no" counts.
    """
    words = re.findall(r"[a-z]+", (text or "").lower())
    if words:
        first, second = words[0], words[1] if len(words) > 1 else ""
        if first in _YES and second not in _NO:
            return True
        if first in _NO and second not in _YES:
            return False
    stated = _ANSWER_IS.search(text or "")
    return stated.group(1).lower() == "yes" if stated else None


@dataclass(frozen=True)
class ForegroundOptions:
    preset: str = "full"
    backend: str = "qwen2.5-vl"
    prompt: str = DEFAULT_PROMPT
    num_frames: int = 3
    dim: float = 0.25  # brightness kept outside the mask
    max_new_tokens: int = 8
    constrain_answer: bool = False
    on_reject: str = "drop"
    dtype: str = "bfloat16"
    seed: int = 0
    # Questions (objects of all the rows in a batch) per `generate` call: throughput, at the cost of GPU memory
    # (the stage's `gpu_memory_gib` grows with it).
    generate_batch: int = 8
    engine: str = "transformers"  # or "vllm" (full preset, on a GPU)

    def __post_init__(self) -> None:
        check_preset(self.preset)
        if self.backend not in QWEN_VL:
            raise ValueError(f"fg_check backend must be one of {tuple(QWEN_VL)}, got {self.backend!r}")
        check_engine("fg_check", self.engine, self.preset)
        if self.generate_batch < 1:
            raise ValueError(f"fg_check generate_batch must be >= 1, got {self.generate_batch}")
        if self.on_reject not in ("drop", "keep"):
            raise ValueError(f"fg_check on_reject must be 'drop' or 'keep', got {self.on_reject!r}")
        if self.num_frames < 1:
            raise ValueError("fg_check num_frames must be >= 1")


def highlight(frame: np.ndarray, mask: np.ndarray, dim: float) -> np.ndarray:
    """The frame with everything outside the mask darkened to `dim` of its brightness."""
    keep = (mask.astype(np.float32) / 255.0)[..., None]
    return np.clip(frame * (keep + (1 - keep) * dim), 0, 255).astype(np.uint8)


def visible_frames(mask: np.ndarray, count: int) -> list[int]:
    visible = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if not visible.size:
        return []
    return sorted({int(visible[int(round(i))]) for i in np.linspace(0, visible.size - 1, min(count, visible.size))})


class ForegroundCheckStage(Stage):
    name = "fg_check"
    default_resources = Resources(num_cpus=1.0, num_gpus=0.25, batch_size=4, retries=1)
    Options = ForegroundOptions
    reads = frozenset({"frames", "mask"})
    writes = frozenset({"scores"})

    @classmethod
    def weights(cls, opts: ForegroundOptions) -> tuple[str, ...]:
        return () if opts.preset == "tiny" else (qwen_vl(opts.backend).weights,)

    @classmethod
    def gpu_memory_gib(cls, opts: ForegroundOptions) -> float:
        return actor_gpu_gib(opts.preset, {qwen_vl(opts.backend).weights: opts.dtype},
                             WORKING_GIB_PER_QUESTION * opts.generate_batch)

    def setup(self) -> None:
        self.device = device_for(self.resources.num_gpus)
        if self.opts.engine == "vllm":
            if self.resources.num_gpus <= 0:
                raise ValueError("fg_check engine vllm runs on a GPU: give the stage num_gpus > 0")
            self.processor, path = qwen_vl_release_processor(self.opts.backend)
            self.vllm = VllmGenerator(VllmSettings(
                str(path), self.opts.dtype, "image", self.opts.num_frames, self.resources.num_gpus,
                self.opts.max_new_tokens, choices=ANSWER_WORDS if self.opts.constrain_answer else (),
                seed=self.opts.seed))
            return
        self.model, self.processor = build_qwen_vl(self.opts.preset, self.opts.backend, dtype=self.opts.dtype,
                                                   seed=self.opts.seed)
        self.model.to(self.device)
        tok = self.processor.tokenizer
        tok.padding_side = "left"  # generate continues every row from its last position: pad before the prompt
        self._answers = [tok.encode(w, add_special_tokens=False) for w in ANSWER_WORDS]
        self._eos = tok.convert_tokens_to_ids("<|im_end|>")

    def _allowed(self, prompt_len: int):
        def allowed(_batch_id: int, ids) -> list[int]:
            sofar = ids[prompt_len:].tolist()
            nxt = {a[len(sofar)] for a in self._answers if a[: len(sofar)] == sofar and len(a) > len(sofar)}
            done = any(a == sofar for a in self._answers)
            return sorted(nxt | ({self._eos} if done else set())) or [self._eos]
        return allowed

    def _ask(self, questions: list[tuple[list[np.ndarray], str]]) -> list[str]:
        """One left-padded `generate` call for all the (images, tag) questions."""
        import torch

        texts = [self.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"} for _ in images]
              + [{"type": "text", "text": self.opts.prompt.format(tag=tag)}]}],
            add_generation_prompt=True, tokenize=False) for images, tag in questions]
        if self.opts.engine == "vllm":
            return [a.strip() for a in self.vllm.generate(texts, [imgs for imgs, _ in questions])]
        images = [image for imgs, _ in questions for image in imgs]
        inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt").to(self.device)
        prompt_len = inputs["input_ids"].shape[1]  # padded: the same for every row
        extra = {"prefix_allowed_tokens_fn": self._allowed(prompt_len)} if self.opts.constrain_answer else {}
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.opts.max_new_tokens, do_sample=False, **extra)
        return [a.strip() for a in self.processor.batch_decode(out[:, prompt_len:], skip_special_tokens=True)]

    def answers(self, questions: list[tuple[list[np.ndarray], str]]) -> list[str]:
        """The answer to each (images, tag) question, `generate_batch` per `generate` call."""
        size = self.opts.generate_batch
        return [a for start in range(0, len(questions), size) for a in self._ask(questions[start:start + size])]

    def ask(self, images: list[np.ndarray], tag: str) -> str:
        return self.answers([(images, tag)])[0]

    def question(self, frames: np.ndarray, obj: Row) -> tuple[list[np.ndarray], str]:
        """The highlighted frames and the tag to ask about; StageError when the object's mask is empty."""
        idx = visible_frames(obj["mask"], self.opts.num_frames)
        if not idx:
            raise StageError("fg_check: the mask is empty on every frame")
        return [highlight(frames[i], obj["mask"][i], self.opts.dim) for i in idx], obj.get("tag") or "object"

    def verdict(self, answer: str, tag: str) -> tuple[dict, str | None]:
        """The verdict ({"verdict", "answer"}) and why to drop the object (None: keep it); StageError when the
        answer says neither yes nor no."""
        verdict = parse_yes_no(answer)
        if verdict is None:
            raise StageError(f"fg_check: unparseable answer {answer!r} for tag {tag!r}")
        check = {"verdict": "yes" if verdict else "no", "answer": answer}
        reject = not verdict and self.opts.on_reject == "drop"
        return check, f"fg_check: {tag!r} is not a foreground object (answer {answer!r})" if reject else None

    def keep_objects(self, row: Row, verdicts: list[tuple[dict, str | None]]) -> Row | None:
        """A grouped row (data_engine/stages/grouped.py) holding the objects it keeps, or None when it keeps none."""
        kept = []
        for o, (check, reason) in zip(row[OBJECTS], verdicts):
            if reason is None:
                kept.append({**o, "scores": {**o["scores"], "fg_check": check}})
            else:
                self.drop(row, f"object {o['obj']:02d} {reason}")
        return with_objects(row, kept) if kept else None

    def process_batch(self, rows: list[Row]) -> list[Row]:
        asked: list[tuple[Row, list[tuple[list[np.ndarray], str]] | StageError]] = []
        for row in rows:
            if row.get("frames") is None or row.get("mask") is None:
                asked.append((row, StageError("fg_check needs frames and mask (run segment first)")))
                continue
            try:
                asked.append((row, [self.question(row["frames"], o)
                                    for o in (row[OBJECTS] if is_grouped(row) else [row])]))
            except StageError as exc:
                asked.append((row, exc))
        answers = iter(self.answers([q for _, qs in asked if not isinstance(qs, StageError) for q in qs]))
        out = []
        for row, qs in asked:
            if isinstance(qs, StageError):
                out.append(self.failed(row, qs))
                continue
            replies = [(next(answers), tag) for _, tag in qs]
            try:
                verdicts = [self.verdict(answer, tag) for answer, tag in replies]
            except StageError as exc:
                out.append(self.failed(row, exc))
                continue
            if is_grouped(row):
                kept = self.keep_objects(row, verdicts)
                out += [kept] if kept is not None else []
                continue
            ((check, reason),) = verdicts
            if reason is not None:
                row.setdefault("scores", {})["fg_check"] = check
                self.drop(row, reason)
                continue
            out.append({**row, "scores": {**row.get("scores", {}), "fg_check": check}})
        return out
