"""The dependency rules of the layout, read from the source with `ast` (imports inside functions count too).

- `schemas/` is the shared core: it imports nothing from `extract/`, `train/` or `rsuper/`.
- `extract/` runs without the training stack: no torch, MONAI or nibabel, and nothing from `train/`.
- `train/losses/` holds pure tensor code: no file, database or network I/O.
- No import cycle between project modules (imports under `if TYPE_CHECKING:` are annotations, not counted).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "extract", "train", "rsuper")
#: Modules whose import means reading or writing outside memory.
IO_MODULES = {"io", "os", "pathlib", "shutil", "json", "yaml", "pickle", "csv", "sqlite3", "duckdb", "nibabel",
              "h5py", "socket", "urllib", "requests", "httpx", "tempfile", "glob", "monai.data"}
IO_CALLS = {"open", "load", "save"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _sources()


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _runtime_nodes(tree: ast.AST):
    """Every node but those under `if TYPE_CHECKING:` (annotations only, never imported at run time)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(child for child in ast.iter_child_nodes(node) if not _is_type_checking(child))


def _imports(name: str) -> set[str]:
    """Absolute names of every module `name` imports, anywhere in its body."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import submodule` depends on the submodule; pkg itself only for the other names.
            submodules = {f"{prefix}.{alias.name}" for alias in node.names} & MODULES.keys()
            out.update(submodules)
            if len(submodules) < len(node.names):
                out.add(prefix)
    return out


def _project_edges() -> dict[str, set[str]]:
    edges = {}
    for name in MODULES:
        targets = set()
        for imported in _imports(name):
            # Resolve to the longest project module the import names (a package's __init__ counts).
            parts = imported.split(".")
            for cut in range(len(parts), 0, -1):
                candidate = ".".join(parts[:cut])
                if candidate in MODULES:
                    if candidate != name:
                        targets.add(candidate)
                    break
        edges[name] = targets
    return edges


def _in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_rules_see_every_package():
    for package in PACKAGES:
        assert package in MODULES, f"{package}/__init__.py not found: the rules would check nothing there"
    assert len(MODULES) > 50


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _in_package(n, "schemas")))
def test_schemas_import_no_pipeline_code(name):
    bad = sorted(i for i in _imports(name) if i.split(".")[0] in {"extract", "train", "rsuper"})
    assert not bad, f"{MODULES[name]} imports {bad}: schemas/ is the core every side shares"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _in_package(n, "extract")))
def test_extract_runs_without_the_training_stack(name):
    bad = sorted(i for i in _imports(name) if i.split(".")[0] in {"torch", "monai", "nibabel", "train", "rsuper"})
    assert not bad, f"{MODULES[name]} imports {bad}: extraction must install and run without torch"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _in_package(n, "train.losses")))
def test_losses_do_no_io(name):
    imported = _imports(name)
    bad = sorted(i for i in imported if any(i == m or i.startswith(m + ".") for m in IO_MODULES))
    assert not bad, f"{MODULES[name]} imports {bad}: losses are pure tensor functions"
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    calls = sorted({node.func.id for node in ast.walk(tree)
                    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IO_CALLS})
    assert not calls, f"{MODULES[name]} calls {calls}: losses are pure tensor functions"


def test_no_import_cycle():
    edges = _project_edges()
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    # The check itself must be able to fail: two modules importing each other.
    monkeypatch.setitem(MODULES, "fake.a", tmp_path / "a.py")
    monkeypatch.setitem(MODULES, "fake.b", tmp_path / "b.py")
    (tmp_path / "a.py").write_text("from fake import b\n")
    (tmp_path / "b.py").write_text("def f():\n    import fake.a\n")
    with pytest.raises(pytest.fail.Exception, match="fake.a -> fake.b -> fake.a|fake.b -> fake.a -> fake.b"):
        test_no_import_cycle()


def test_imports_are_read_inside_functions_relative_and_not_under_type_checking(tmp_path, monkeypatch):
    (tmp_path / "m.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "from ..other import thing\n"
        "if TYPE_CHECKING:\n    import train.trainer\n"
        "def f():\n    import torch.nn\n")
    monkeypatch.setitem(MODULES, "extract.reading.m", tmp_path / "m.py")
    monkeypatch.setitem(MODULES, "extract.reading.sibling", tmp_path / "sibling.py")
    assert _imports("extract.reading.m") == {"typing", "extract.reading.sibling", "extract.other", "torch.nn"}
