"""The import rule of docs/design.md, checked on the source: imports go one way,
cli → experiments → blocks, and inside experiments errors ← runs ← data ← train ←
analysis ← tools (a package imports only packages to its left); no module imports
itself through a cycle, lazy imports inside functions included."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FOLDERS = {"cli": "sampler.cli", "experiments": "sampler.experiments", "blocks": "sampler.blocks"}
LAYERS = ["blocks", "experiments.errors", "experiments.runs", "experiments.data", "experiments.train",
          "experiments.analysis", "experiments.tools", "cli"]


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(REPO).with_suffix("").parts
    parts = [FOLDERS[folder], *rest]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every sampler module `path` imports, at any depth of its code."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("sampler."))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if not base.startswith("sampler."):
                continue
            for alias in node.names:  # `from . import camvid` names a module, not an attribute
                sub = f"{base}.{alias.name}"
                found.add(sub if _exists(sub) else base)
    return {m for m in found if m != name}


def _exists(module: str) -> bool:
    parts = module.split(".")
    folder = next((f for f, m in FOLDERS.items() if module.startswith(m + ".") or module == m), None)
    if folder is None:
        return False
    rel = Path(folder, *parts[2:])
    return (REPO / rel).with_suffix(".py").is_file() or (REPO / rel / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    files = [p for f in FOLDERS for p in (REPO / f).rglob("*.py")]
    return {module_name(p): imports(p) for p in files}


def layer(module: str) -> int:
    short = module.removeprefix("sampler.")
    return max(i for i, prefix in enumerate(LAYERS) if short == prefix or short.startswith(prefix + "."))


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `g`, as the list of modules around it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n in g and n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for module in sorted(g):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def wrong_way(g: dict[str, set[str]]) -> list[str]:
    return [f"{m} imports {n}" for m, targets in g.items() for n in sorted(targets)
            if not n.startswith("sampler.configs") and layer(n) > layer(m)]


def test_no_import_cycles() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_imports_go_one_way() -> None:
    wrong = wrong_way(graph())
    assert not wrong, ("imports against the layering (cli → experiments → blocks; errors ← runs ← data ← "
                       "train ← analysis ← tools):\n" + "\n".join(wrong))


def test_the_checks_catch_a_planted_cycle_and_an_upward_import() -> None:
    g = graph()
    assert find_cycle({**g, "sampler.experiments.errors": {"sampler.experiments.train.runner"}}) is not None
    assert wrong_way({"sampler.experiments.runs.record": {"sampler.experiments.train.env"}})
    assert wrong_way({"sampler.blocks.model": {"sampler.experiments.errors"}})
    # the parser sees lazy imports inside functions and relative imports of sub-modules
    assert {"sampler.experiments.train.model", "sampler.experiments.runs.record"} <= g["sampler.experiments.train.runner"]
    assert "sampler.experiments.data.camvid" in g["sampler.experiments.data"]
    assert "sampler.experiments.analysis.plots" in g["sampler.experiments.analysis.compare"]  # lazy
