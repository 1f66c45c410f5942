"""The user docs hold together: every relative link in README.md, BENCHMARKS.md and docs/*.md points at a file that
exists (and at a heading that exists, for `#anchors` into Markdown), and every `layerflow COMMAND` the README shows
is a command of `layerflow`."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").glob("*.md"))]


def without_code_blocks(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors: the heading lower-cased, punctuation other than - and _ dropped, spaces to -."""
    headings = re.findall(r"^#+ (.+)$", without_code_blocks(path.read_text()), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc):
    broken = []
    for link in re.findall(r"\]\(([^)\s]+)\)", without_code_blocks(doc.read_text())):
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in heading_anchors(target):
            broken.append(f"{link}: no such heading")
    assert not broken, f"{doc.name}: {broken}"


def test_the_readme_shows_only_real_commands():
    from layerflow.cli import COMMANDS

    shown = set(re.findall(r"\blayerflow ([a-z][a-z-]+)", (REPO / "README.md").read_text()))
    assert shown and shown <= set(COMMANDS), f"not commands of layerflow: {sorted(shown - set(COMMANDS))}"


def test_the_readme_stays_a_guide():
    assert len((REPO / "README.md").read_text().splitlines()) <= 260
