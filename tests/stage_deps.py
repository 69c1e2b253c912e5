"""What each DVC stage really runs: its script's import closure inside detflow (grimp, the
graph import-linter checks), as the smallest list of library paths that covers it.

``python tests/stage_deps.py`` prints each stage's expected library deps for dvc.yaml.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
LIBRARY = SRC / "detflow"
STAGES = REPO / "stages"
HELPERS = ("_app", "_sweep")  # stage helpers in stages/, every stage's deps


def script_imports(path: Path) -> set[str]:
    """Modules a script imports anywhere (top level or inside functions), as written."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@cache
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("detflow", cache_dir=None)


def library_closure(script: Path) -> set[str]:
    """detflow modules that running ``script`` imports: its own detflow imports, those of the
    stage helpers it uses, everything they import in turn, and every package whose
    ``__init__`` runs on the way."""
    scripts = stage_scripts(script)
    roots = {name for path in scripts for name in script_imports(path) if name in graph().modules}
    closure = set(roots)
    for module in roots:
        closure |= {m for m in graph().find_upstream_modules(module) if m.startswith("detflow")}
    for module in list(closure):
        parts = module.split(".")
        closure |= {".".join(parts[:i]) for i in range(1, len(parts))}
    return closure


def module_file(module: str) -> Path:
    path = SRC.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def library_files() -> set[Path]:
    return {p for p in LIBRARY.rglob("*.py") if "__pycache__" not in p.parts}


def smallest_cover(files: set[Path]) -> list[str]:
    """``files`` as repository paths, a whole folder below src/detflow where every module
    of it is needed (never src/detflow itself)."""
    folders = sorted({p.parent for p in library_files()} - {LIBRARY}, key=lambda d: len(d.parts))
    covered, paths = set(), []
    for folder in folders:
        inside = {p for p in library_files() if folder in p.parents}
        if inside <= files and not inside <= covered:
            paths.append(folder)
            covered |= inside
    paths += sorted(files - covered)
    return sorted(str(p.relative_to(REPO)) for p in paths)


def stage_scripts(script: Path) -> set[Path]:
    """``script`` and the stage helpers it imports, directly or through each other."""
    scripts, todo = set(), [script]
    while todo:
        path = todo.pop()
        scripts.add(path)
        todo += [STAGES / f"{h}.py" for h in HELPERS if h in script_imports(path)]
        todo = [p for p in todo if p not in scripts]
    return scripts


def expected_code_deps(stage: str) -> list[str]:
    """The code paths (scripts, then library) the ``stage`` entry of dvc.yaml should list."""
    script = STAGES / f"{stage}.py"
    scripts = sorted(str(p.relative_to(REPO)) for p in stage_scripts(script) - {script})
    closure = library_closure(script)
    return [f"stages/{stage}.py", *scripts, *smallest_cover({module_file(m) for m in closure})]


if __name__ == "__main__":
    for name in sys.argv[1:] or [
        "collect",
        "clean",
        "split",
        "augment",
        "train",
        "evaluate",
        "export",
        "optimize",
    ]:
        print(f"{name}:")
        for path in expected_code_deps(name):
            print(f"  - {path}")
