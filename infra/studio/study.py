"""The paper's user study: pairs of outputs for the same prompts from two systems, shown side by side with the sides
randomised and recorded; preference rates per question with 95 % Wilson intervals, and raters who answered every
item the same way flagged."""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_engine.schema import LayeredClip
from evaluation.errors import EvaluationError
from evaluation.layered_io import find_samples
from layerflow.studio.clips import StudioInputError, read_sample_clip
from layerflow.studio.page_data import sample_entry

# Table 2's questions: quality and text alignment per layer, and whether the layers belong together.
QUESTIONS: tuple[tuple[str, str], ...] = (
    ("fg_quality", "Which foreground looks better (sharp, clean edges, natural motion)?"),
    ("bg_quality", "Which background looks better?"),
    ("blend_quality", "Which blended video looks better?"),
    ("fg_text_alignment", "Which foreground matches its foreground prompt better?"),
    ("bg_text_alignment", "Which background matches its background prompt better?"),
    ("blend_text_alignment", "Which blended video matches its prompt better?"),
    ("layer_coherence", "In which do the foreground and background fit together better (lighting, scale, motion)?"),
)
Z95 = 1.959963984540054


def runs_by_prompt(run: Path) -> dict[str, LayeredClip]:
    """{blend prompt: clip} of every sample folder under a run (the prompt is what pairs two systems' outputs)."""
    try:
        folders = find_samples(run)
    except EvaluationError as exc:
        raise StudioInputError(str(exc)) from exc
    clips = {}
    for folder in folders:
        clip = read_sample_clip(folder)
        clips.setdefault(clip.captions.blend or clip.key, clip)
    return clips


def study_data(run_a: Path, run_b: Path, prompts: list[str] | None, seed: int) -> dict[str, Any]:
    """The page's data: one item per prompt both runs hold (or per listed prompt), its sides drawn from `seed`."""
    a, b = runs_by_prompt(run_a), runs_by_prompt(run_b)
    wanted = prompts if prompts is not None else [p for p in a if p in b]
    missing = [p for p in wanted if p not in a or p not in b]
    if missing:
        raise StudioInputError(f"prompt {missing[0]!r} is not in both runs ({run_a}, {run_b}); list only prompts "
                               "that both generated (their blend prompts in clip.json)")
    if not wanted:
        raise StudioInputError(f"{run_a} and {run_b} share no prompt; generate the same prompts with both systems")
    rng = random.Random(seed)
    items = []
    for index, prompt in enumerate(wanted):
        left = rng.choice(("A", "B"))
        sides = {"left": left, "right": "B" if left == "A" else "A"}
        clips = {"A": a[prompt], "B": b[prompt]}
        items.append({"id": f"item{index:03d}", "prompt": prompt, "captions": clips["A"].captions.as_dict(),
                      "sides": sides, "left": sample_entry(clips[sides["left"]]),
                      "right": sample_entry(clips[sides["right"]])})
    return {"title": "LayerFlow user study", "seed": seed, "systems": {"A": str(run_a), "B": str(run_b)},
            "questions": [{"id": q, "text": text} for q, text in QUESTIONS], "items": items}


def wilson(successes: int, total: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion (sound near 0 and 1 and for small samples, unlike p +- 2 se)."""
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    centre = (p + Z95**2 / (2 * total)) / (1 + Z95**2 / total)
    half = Z95 * math.sqrt(p * (1 - p) / total + Z95**2 / (4 * total**2)) / (1 + Z95**2 / total)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Rater:
    name: str
    answers: list[dict[str, str]]

    @property
    def straight_lined(self) -> bool:
        """Every answer on the same side: the rater did not look."""
        return len(self.answers) > 1 and len({a["side"] for a in self.answers}) == 1


def read_answers(path: Path) -> Rater:
    try:
        data = json.loads(path.read_text())
        answers = [{"item": a["item"], "question": a["question"], "side": a["side"], "system": a["system"]}
                   for a in data["answers"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise StudioInputError(f"{path}: not an answers file the study page saved ({exc}); pass the downloaded "
                               "answers-*.json files") from exc
    return Rater(str(data.get("rater") or path.stem), answers)


def score_report(raters: list[Rater]) -> str:
    """Markdown: per question, how often system A was preferred over B, with its 95 % interval, and flagged raters."""
    lines = ["# User study: preference for system A over B", "",
             f"{len(raters)} rater(s). 95 % Wilson intervals.", "",
             "| question | answers | A preferred | 95 % CI |", "|---|---|---|---|"]
    for question, _ in QUESTIONS:
        chosen = [a["system"] for r in raters for a in r.answers if a["question"] == question]
        low, high = wilson(chosen.count("A"), len(chosen))
        rate = f"{chosen.count('A') / len(chosen):.1%}" if chosen else "-"
        lines.append(f"| {question} | {len(chosen)} | {rate} | [{low:.1%}, {high:.1%}] |")
    flagged = [r.name for r in raters if r.straight_lined]
    lines += ["", "Raters who answered every item the same way (flagged, still counted): "
              + (", ".join(flagged) if flagged else "none")]
    return "\n".join(lines) + "\n"
