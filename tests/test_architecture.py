"""The architecture holds: the import contracts in .importlinter (layers, data_engine's shared surface, no cycles)."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


# -- modules loaded by string -----------------------------------------------------------------------------------------
# A registry entry "package.module:Class" (data_engine/registry.py) imports its module when it is used: an import
# that no import statement shows. These tests count each such string as an import of the module that holds it, and
# check the contracts on the graph with those edges added.
STRING_IMPORT = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+):[A-Za-z_]\w*$")


def module_source(module: str) -> str:
    """The text of a module of this checkout, read without importing it (the package `layerflow` is infra/)."""
    top, *rest = module.split(".")
    folder = REPO.joinpath("infra" if top == "layerflow" else top, *rest)
    return (folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")).read_text()


def string_imports(graph) -> list[tuple[str, str, int, str]]:
    """(importer, imported, line, text) for every string "package.module:Class" in a module of `graph` that names
    another module of it."""
    found = []
    for module in sorted(graph.modules):
        for node in ast.walk(ast.parse(module_source(module))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                match = STRING_IMPORT.match(node.value)
                if match and match[1] in graph.modules and match[1] != module:
                    found.append((module, match[1], node.lineno, repr(node.value)))
    return found


def broken_contracts(monkeypatch) -> tuple[list[str], str]:
    """The contracts of .importlinter that the project's imports plus its string imports break, with the
    string imports found."""
    from importlinter import api  # noqa: F401 - configures import-linter
    from importlinter.application import use_cases

    build = use_cases._build_graph
    added: list[tuple[str, str, int, str]] = []

    def with_strings(*args, **kwargs):
        graph = build(*args, **kwargs)
        added.extend(string_imports(graph))
        for importer, imported, line, text in added:
            graph.add_import(importer=importer, imported=imported, line_number=line, line_contents=text)
        return graph

    monkeypatch.setattr(use_cases, "_build_graph", with_strings)
    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(REPO))  # the packages of this checkout, not tests/<package> folders
    use_cases._register_built_in_contract_types()
    report = use_cases.create_report(use_cases.read_user_options(str(REPO / ".importlinter")), cache_dir=None)
    broken = [f"{contract.name}: {check.metadata}" for contract, check in report.get_contracts_and_checks()
              if not check.kept]
    return broken, "\n".join(f"{a} -> {b}" for a, b, _, _ in added)


def test_modules_loaded_by_string_are_imports_that_keep_the_contracts(monkeypatch):
    from data_engine.sources import SOURCES
    from data_engine.stages import STAGES

    broken, added = broken_contracts(monkeypatch)
    assert broken == [], (broken, added)
    for registry in (STAGES, SOURCES):  # every registry entry is counted
        for target in registry.values():
            assert f"-> {target.partition(':')[0]}\n" in added + "\n", target


@pytest.mark.parametrize("holder, target, contract", [
    # the cycle the engine had: pipeline imports inputs, and inputs loading pipeline's class back by string
    ("data_engine.engine.inputs", "data_engine.engine.pipeline:StageActor", "no import cycles inside a package"),
    # a shared module of data_engine loading a class of the model by string
    ("data_engine.weights", "model.config:TransformerConfig", "packages depend downwards only"),
])
def test_a_module_loaded_by_string_that_breaks_a_contract_is_found(monkeypatch, holder, target, contract):
    real = module_source

    def with_registry(module: str) -> str:
        return real(module) + (f"\nREGISTRY = {{'x': {target!r}}}\n" if module == holder else "")

    monkeypatch.setitem(globals(), "module_source", with_registry)
    broken, added = broken_contracts(monkeypatch)
    assert f"{holder} -> {target.partition(':')[0]}" in added
    assert [b for b in broken if b.startswith(contract)], (broken, added)
