"""The architecture holds: the import contracts in .importlinter (layers, data_engine's shared surface, no cycles)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), str(REPO / ".importlinter"), "--no-cache"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout and "Contracts: 3 kept, 0 broken." in result.stdout


def _stub_tree(root: Path, forbidden: tuple[str, str]) -> None:
    """Empty packages of the project's names, with one import `forbidden` = (importer, imported) added."""
    for package in ("layerflow", "data_engine", "data_engine.engine", "data_engine.stages", "data_engine.sources",
                    "model", "trainer", "evaluation"):
        folder = root.joinpath(*package.split("."))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text("")
        (folder / "module.py").write_text("")  # the no-cycles contract names every package's submodules
    (root / "data_engine" / "cli.py").write_text("")
    importer, imported = forbidden
    root.joinpath(*importer.split(".")).with_suffix(".py").write_text(f"import {imported}\n")


def test_a_forbidden_import_breaks_the_contracts(tmp_path):
    import os

    lint = Path(sys.executable).with_name("lint-imports")
    for importer, imported in (("data_engine.cli", "model"), ("model.generate", "data_engine.stages"),
                               ("trainer.data", "evaluation")):
        root = tmp_path / importer.replace(".", "_")
        _stub_tree(root, (importer, imported))
        env = {**os.environ, "PYTHONPATH": str(root)}
        result = subprocess.run([str(lint), str(REPO / ".importlinter"), "--no-cache"], cwd=root, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode != 0 and "BROKEN" in result.stdout, (importer, imported, result.stdout[-2000:])
        assert f"{importer} -> {imported}" in result.stdout
