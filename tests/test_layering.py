"""Imports go one way: errors <- contracts <- compare, families <- engine <- export <- bench <- cli, viz beside
the engine (it may use the engine and the contracts, never export, bench or the CLI).

An AST walk over every module of the distribution (relative imports resolved through
``[tool.setuptools.package-dir]``), counting imports at module level *and* inside functions:
an import written inside a function still couples the two modules, it only hides it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]

# (rank, group) per module prefix; the longest matching prefix wins. A module may import a module
# of a lower rank, or one of its own group; never a higher rank, never another group of its rank.
LAYERS: dict[str, tuple[int, str]] = {
    "featuremaps": (0, "root"),  # __init__: __version__ and lazy names (importlib strings, no imports)
    "featuremaps.errors": (0, "errors"),
    "featuremaps.contracts": (1, "contracts"),
    "featuremaps.samples": (1, "samples"),  # photos shipped inside installed packages; imports nothing
    "featuremaps.compare": (2, "compare"),
    "featuremaps.families": (2, "families"),  # the pure-Python family records (layers, default taps)
    "featuremaps.engine": (3, "engine"),
    "featuremaps.viz": (4, "viz"),
    "featuremaps.export": (4, "export"),
    "featuremaps.bench": (5, "bench"),
    "featuremaps.report": (5, "report"),
    "featuremaps.info": (4, "info"),  # describes a model file or a store: reads them with the engine
    "featuremaps.cli": (6, "cli"),
    "featuremaps.cmd_": (6, "cli"),  # commands added by other branches, moved into cli/ at merge
    "featuremaps.__main__": (7, "main"),
}

# (importer, imported) pairs allowed against the rule, each with its reason. Keep it empty.
ALLOWED: dict[tuple[str, str], str] = {}


def package_dirs() -> dict[str, Path]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {pkg: ROOT / d for pkg, d in cfg["package-dir"].items()}


def all_modules() -> dict[str, Path]:
    """Every module of the distribution: dotted name -> file."""
    mods: dict[str, Path] = {}
    dirs = package_dirs()
    for pkg, folder in dirs.items():
        for f in folder.rglob("*.py"):
            rel = f.relative_to(folder).with_suffix("").parts
            if "__pycache__" in rel:
                continue
            name = ".".join((pkg, *rel))
            name = name[: -len(".__init__")] if name.endswith(".__init__") else name
            # a subfolder mapped to its own package is walked under that name instead
            if not any(other != pkg and other.startswith(pkg + ".") and f.is_relative_to(d)
                       for other, d in dirs.items()):
                mods[name] = f
    return mods


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Internal modules ``module`` imports anywhere in its file (module level or in functions)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_pkg, node)
            # `from pkg import sub` imports the submodule sub; `from mod import name` imports mod
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import featuremaps.engine.store as s` etc.
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def layer(module: str) -> tuple[int, str]:
    best = max((p for p in LAYERS if module == p or (p != "featuremaps" and module.startswith(p + "."))
                or (p.endswith("_") and module.startswith(p))), key=len, default=None)
    if best is None:
        raise AssertionError(f"{module} has no layer; add its prefix to LAYERS in tests/test_layering.py")
    return LAYERS[best]


def import_graph() -> dict[str, set[str]]:
    mods = all_modules()
    return {m: imports_of(m, p, set(mods)) for m, p in mods.items()}


def test_the_walk_sees_the_whole_distribution():
    graph = import_graph()
    assert {"featuremaps.errors", "featuremaps.contracts", "featuremaps.compare", "featuremaps.engine.store",
            "featuremaps.export.onnx_export", "featuremaps.bench.parity", "featuremaps.cli"} <= set(graph)
    # relative imports resolve through the package-dir mapping (engine/ -> featuremaps.engine)
    assert "featuremaps.contracts" in graph["featuremaps.engine.store.core"]
    # function-level imports count: cmd modules import the library inside functions too
    assert any(dep.startswith("featuremaps.export") for dep in graph["featuremaps.cli.export"])


def test_imports_point_down():
    graph = import_graph()
    bad = []
    for mod, deps in sorted(graph.items()):
        rank, group = layer(mod)
        for dep in sorted(deps):
            dep_rank, dep_group = layer(dep)
            ok = dep_group == group or dep_rank < rank
            if not ok and (mod, dep) not in ALLOWED:
                bad.append(f"{mod} ({group}) imports {dep} ({dep_group})")
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_nothing_imports_the_cli():
    graph = import_graph()
    users = sorted(m for m, deps in graph.items() if layer(m)[1] not in ("cli", "main")
                   and any(layer(d)[1] == "cli" for d in deps))
    assert not users, f"{users} import featuremaps.cli; the CLI is a leaf"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    # a package __init__ that re-exports its submodules is not a cycle with them: a submodule
    # importing its own package is an edge up to the root namespace only
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in import_graph().items()}
    assert _cycles(graph) == []


# Modules that still import project modules inside functions, and why. Project modules are imported
# at the top (only heavy optional packages such as torch, onnx, onnxruntime, zarr, ray, matplotlib,
# cv2 belong inside functions); shrink this list, never grow it.
FUNCTION_LEVEL_ALLOWED: dict[str, str] = {}


def function_level_imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("featuremaps")):
                    out.add("." * node.level + (node.module or ""))
    return out


def test_project_imports_are_at_module_level():
    found = {m: function_level_imports(m, p) for m, p in all_modules().items()}
    bad = sorted(f"{m}: {', '.join(sorted(deps))}" for m, deps in found.items()
                 if deps and m not in FUNCTION_LEVEL_ALLOWED)
    assert not bad, "project modules imported inside functions (move them to the top):\n" + "\n".join(bad)
    stale = sorted(m for m in FUNCTION_LEVEL_ALLOWED if not found.get(m))
    assert not stale, f"remove from FUNCTION_LEVEL_ALLOWED, they are clean now: {stale}"


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _function_level_targets(module: str, path: Path) -> list[tuple[str, str, int]]:
    """``(imported module, name, line)`` for each project ``from X import name`` inside a function."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("featuremaps")):
                    out += [(_resolve(module, is_pkg, node), a.name, node.lineno) for a in node.names]
    return out


def test_function_level_imports_name_what_exists():
    """An import inside a function only fails when that function runs (a GPU path no CPU test
    reaches broke this way: ``from .reference import _StopForward`` after a module became a shim).
    Import each target here and check every name it takes exists."""
    import importlib

    missing = []
    for mod, path in sorted(all_modules().items()):
        for target, name, line in _function_level_targets(mod, path):
            imported = importlib.import_module(target)
            if not hasattr(imported, name):
                try:
                    importlib.import_module(f"{target}.{name}")
                except ImportError:
                    missing.append(f"{path.relative_to(ROOT)}:{line}: {target} has no {name!r}")
    assert not missing, "\n".join(missing)
