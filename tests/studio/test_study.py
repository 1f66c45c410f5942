"""`layerflow study`: sides are drawn from the seed and recorded, answers score into rates with Wilson intervals,
straight-lining raters are flagged."""
from __future__ import annotations

import json

from layerflow.studio.study import QUESTIONS, Rater, score_report, study_data, wilson
from layerflow.studio.study_cli import main as study_main


def test_sides_are_drawn_from_the_seed_and_recorded(study_runs):
    data = study_data(study_runs / "a", study_runs / "b", None, seed=3)
    assert len(data["items"]) == 3 and data["seed"] == 3
    assert data == study_data(study_runs / "a", study_runs / "b", None, seed=3)
    for item in data["items"]:
        assert sorted(item["sides"].values()) == ["A", "B"]
        # B is the faded copy: its foreground alpha is half of A's, so the recorded side is checkable from pixels.
        left_alpha = next(layer for layer in item["left"]["layers"] if layer["name"] == "alpha")["frames"][0]
        a_left = study_data(study_runs / "a", study_runs / "a", [item["prompt"]], 0)["items"][0]["left"]
        a_alpha = next(layer for layer in a_left["layers"] if layer["name"] == "alpha")["frames"][0]
        assert (left_alpha == a_alpha) == (item["sides"]["left"] == "A")
    draws = {tuple(i["sides"]["left"] for i in study_data(study_runs / "a", study_runs / "b", None, seed=s)["items"])
             for s in range(8)}
    assert len(draws) > 1


def test_wilson_interval_known_values():
    low, high = wilson(8, 10)
    assert round(low, 4) == 0.4902 and round(high, 4) == 0.9433
    assert wilson(0, 5)[0] == 0.0 and wilson(5, 5)[1] == 1.0


def test_the_report_gives_rates_and_flags_straight_liners(tmp_path, capsys):
    items = ["item000", "item001"]
    steady = [{"item": i, "question": q, "side": "left", "system": "A"} for i in items for q, _ in QUESTIONS]
    mixed = [{"item": i, "question": q, "side": side, "system": system}
             for i, (side, system) in zip(items, [("left", "B"), ("right", "A")]) for q, _ in QUESTIONS]
    report = score_report([Rater("steady", steady), Rater("careful", mixed)])
    low, high = wilson(3, 4)
    assert f"| fg_quality | 4 | 75.0% | [{low:.1%}, {high:.1%}] |" in report
    assert report.rstrip().endswith("steady")
    for name, answers in (("steady", steady), ("careful", mixed)):
        (tmp_path / f"answers-{name}.json").write_text(json.dumps({"rater": name, "answers": answers}))
    assert study_main(["score", *map(str, sorted(tmp_path.glob("*.json"))), "--out", str(tmp_path / "r.md")]) == 0
    assert (tmp_path / "r.md").read_text() == score_report([Rater("careful", mixed), Rater("steady", steady)])
    (tmp_path / "broken.json").write_text("{}")
    assert study_main(["score", str(tmp_path / "broken.json")]) == 2
    assert "not an answers file" in capsys.readouterr().err


def test_make_refuses_a_prompt_one_run_lacks(study_runs, tmp_path, capsys):
    (tmp_path / "prompts.txt").write_text("A purple cube.\n")
    code = study_main(["make", "--a", str(study_runs / "a"), "--b", str(study_runs / "b"),
                       "--prompts", str(tmp_path / "prompts.txt"), "--out", str(tmp_path / "study")])
    assert code == 2 and "'A purple cube.' is not in both runs" in capsys.readouterr().err
