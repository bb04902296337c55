"""Data flows one way: the library never imports the harness, the harness's lower layers (prompt readers,
evaluators, statistics) never import the runner, tasks or report built on them, and only the zoo's glue
imports the zoo. Every import counts, function-level ones too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.paths import ROOT

# package -> the bench sub-packages it may import (besides itself); None: no bench import at all
LOWER_LAYERS: dict[str, frozenset[str] | None] = {
    "guidance": None,
    "bench/prompts": frozenset(),
    "bench/evaluators": frozenset(),
    "bench/stats": frozenset({"evaluators"}),
}


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module `path` imports, relative imports resolved, and `from a import b` counted as a.b too (b may
    be a module: `from guidance import zoo`)."""
    package = list(path.relative_to(root).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def bench_imports(folder: str, root: Path = ROOT) -> dict[str, set[str]]:
    """Each module of `folder` -> the bench sub-packages it imports (other than its own)."""
    own = folder.split("/")[1] if "/" in folder else None
    out = {}
    for path in sorted((root / folder).rglob("*.py")):
        used = {m.split(".")[1] if m.count(".") else "bench" for m in imported_modules(path, root)
                if m == "bench" or m.startswith("bench.")}
        out[str(path.relative_to(root))] = used - {own}
    return out


@pytest.mark.parametrize("folder", list(LOWER_LAYERS))
def test_lower_layers_import_nothing_above_them(folder):
    allowed = LOWER_LAYERS[folder] or frozenset()
    wrong = {module: sorted(used - allowed) for module, used in bench_imports(folder).items() if used - allowed}
    assert wrong == {}


def test_only_the_zoos_glue_imports_the_zoo():
    importers = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "bench").rglob("*.py")
                       if any(m == "guidance.zoo" or m.startswith("guidance.zoo.") for m in imported_modules(path)))
    assert importers and all(p.startswith("bench/zoo/") for p in importers), importers


def test_the_check_sees_an_upward_import(tmp_path):
    (tmp_path / "bench" / "stats").mkdir(parents=True)
    (tmp_path / "bench" / "stats" / "late.py").write_text("def f():\n    from bench.report.html import build_report\n")
    (tmp_path / "bench" / "stats" / "near.py").write_text("from ..runner import store\nfrom . import bootstrap\n")
    assert bench_imports("bench/stats", tmp_path) == {"bench/stats/late.py": {"report"},
                                                      "bench/stats/near.py": {"runner"}}
    (tmp_path / "bench" / "stats" / "zoo.py").write_text("from guidance import zoo\n")
    assert "guidance.zoo" in imported_modules(tmp_path / "bench" / "stats" / "zoo.py", tmp_path)


def unexplained_local_imports(path: Path) -> list[int]:
    """Lines of imports inside functions with no comment (on the line or the one above) saying why."""
    lines = path.read_text().splitlines()
    found = []
    for function in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += [node.lineno for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom))
                      and "#" not in lines[node.lineno - 1] and "#" not in lines[node.lineno - 2]]
    return sorted(set(found))


def test_function_level_imports_say_why():
    """An import inside a function hides a cycle or a slow start unless it says why (an optional dependency)."""
    files = [*(ROOT / "guidance").rglob("*.py"), *(ROOT / "bench").rglob("*.py"), ROOT / "tasks.py"]
    bare = {str(p.relative_to(ROOT)): lines for p in sorted(files) if (lines := unexplained_local_imports(p))}
    assert bare == {}


def test_the_import_check_sees_a_bare_local_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import json\n\n    return json\n\n\ndef g():\n    import yaml  # optional\n")
    assert unexplained_local_imports(module) == [2]
