"""Architecture rules for the ``dfgr_torchrec`` package, checked statically.

This module never imports the package: it reads every ``.py`` file under
``dfgr_torchrec/`` with :mod:`ast`, so it runs in well under a second and
keeps working while the package itself is broken.

Units
-----
A file's *unit* is the first path component after ``dfgr_torchrec``:
``dfgr_torchrec/ops/padded.py`` -> ``ops``, ``dfgr_torchrec/features.py``
-> ``features``, ``dfgr_torchrec/models/__init__.py`` -> ``models``.  The
package root ``dfgr_torchrec/__init__.py`` is its own unit (``ROOT``) and is
exempt from every rule.  An import of ``dfgr_torchrec.a.b`` targets unit
``a``; ``from dfgr_torchrec import a`` targets unit ``a`` as well.

Every import of the package counts: ``import dfgr_torchrec.x``,
``from dfgr_torchrec.x import y``, relative imports, imports nested in
functions / classes / ``if`` blocks (lazy imports), and
``importlib.import_module("dfgr_torchrec.x")`` / ``__import__`` with a
literal string.

Layering (rule 1)
-----------------
::

    models                      (may also use batch)
      |
    modules
      |
    features   config   ops     (bottom layer)

* ``features`` is a leaf: it imports nothing of the package.
* ``ops`` imports only ``ops``.
* ``config`` imports only ``config``, ``ops`` and ``features``.
* ``modules`` imports only the bottom layer and itself.
* ``models`` imports only the bottom layer, ``modules``, itself and ``batch``.

Other rules
-----------
2. ``batch`` and ``data`` stay below the model/training stack: they never
   import ``modules``, ``models``, ``training``, ``recipes`` or ``bench``.
3. ``training`` never imports ``bench`` or ``recipes``.
4. Private names stay in their unit: no file imports a name starting with
   ``_`` (dunders such as ``__version__`` excepted) from another unit.  This
   covers e.g. ``bench`` reaching into ``recipes.train._helper``.
5. Size: ``dfgr_torchrec/recipes/train.py`` has at most
   ``MAX_TRAIN_RECIPE_LINES`` lines and no function or method anywhere is
   longer than ``MAX_FUNCTION_LINES`` lines (``end_lineno - lineno + 1``,
   docstring included; nested functions are counted on their own too).
6. Self-checks so none of the above can pass vacuously.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

# --------------------------------------------------------------------------
# Rules as data
# --------------------------------------------------------------------------

PACKAGE = "dfgr_torchrec"
ROOT = "<root>"  # the unit of dfgr_torchrec/__init__.py (and of `import dfgr_torchrec`)

BOTTOM_UNITS = frozenset({"features", "config", "ops"})

# Rule 1: for each layered unit, the complete set of package units it may
# import (its own unit included).  Units not listed here are not layered.
ALLOWED_IMPORTS: dict[str, frozenset[str]] = {
    "features": frozenset({"features"}),
    "ops": frozenset({"ops"}),
    "config": frozenset({"config", "ops", "features"}),
    "modules": BOTTOM_UNITS | {"modules"},
    "models": BOTTOM_UNITS | {"modules", "models", "batch"},
}

# Rules 2 and 3: for each unit, the package units it must never import.
FORBIDDEN_IMPORTS: dict[str, frozenset[str]] = {
    "batch": frozenset({"modules", "models", "training", "recipes", "bench"}),
    "data": frozenset({"modules", "models", "training", "recipes", "bench"}),
    "training": frozenset({"bench", "recipes"}),
}

# Rule 5.
TRAIN_RECIPE = "dfgr_torchrec/recipes/train.py"
MAX_TRAIN_RECIPE_LINES = 200
MAX_FUNCTION_LINES = 60

# Rule 6.
MIN_FILES = 30
UNITS_WITH_EDGES = ("ops", "modules", "models")

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO_ROOT / PACKAGE


# --------------------------------------------------------------------------
# Import collection
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportEdge:
    """One package import: ``module`` is the full dotted name imported."""

    lineno: int
    module: str
    # The bound name for `from X import name` (None for `import X`).
    name: str | None = None

    @property
    def unit(self) -> str:
        parts = self.module.split(".")
        return parts[1] if len(parts) > 1 else ROOT

    def __str__(self) -> str:
        return self.module


def _resolve_relative(level: int, module: str | None, current: str, is_pkg: bool) -> str:
    """Absolute module name of ``from {'.' * level}{module} import ...``."""
    package = current.split(".") if is_pkg else current.split(".")[:-1]
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join(base + ([module] if module else []))


def _in_package(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def collect_imports(source: str, current: str = PACKAGE + ".__main__", is_pkg: bool = False) -> list[ImportEdge]:
    """All imports of the package in ``source``, at any nesting depth.

    ``current`` is the dotted name of the module the source belongs to (used
    to resolve relative imports); ``is_pkg`` says whether it is an
    ``__init__.py``.
    """
    edges: list[ImportEdge] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _in_package(alias.name):
                    edges.append(ImportEdge(node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(node.level, node.module, current, is_pkg)
            else:
                base = node.module or ""
            if not _in_package(base):
                continue
            for alias in node.names:
                if alias.name == "*":
                    edges.append(ImportEdge(node.lineno, base, "*"))
                else:
                    # Also right for `from dfgr_torchrec import x`: x is then a unit.
                    edges.append(ImportEdge(node.lineno, f"{base}.{alias.name}", alias.name))
        elif isinstance(node, ast.Call):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if fname in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and _in_package(arg.value):
                    edges.append(ImportEdge(node.lineno, arg.value))
    return sorted(edges, key=lambda e: (e.lineno, e.module))


@dataclass(frozen=True)
class SourceFile:
    rel: str  # path relative to the repo root, e.g. dfgr_torchrec/ops/jagged.py
    unit: str
    text: str
    tree: ast.Module
    imports: tuple[ImportEdge, ...]


def _unit_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR).parts
    if parts == ("__init__.py",):
        return ROOT
    return parts[0].removesuffix(".py")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.lru_cache(maxsize=None)
def package_files() -> tuple[SourceFile, ...]:
    files = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        is_pkg = path.name == "__init__.py"
        files.append(
            SourceFile(
                rel=path.relative_to(REPO_ROOT).as_posix(),
                unit=_unit_of(path),
                text=text,
                tree=ast.parse(text, filename=str(path)),
                imports=tuple(collect_imports(text, _module_name(path), is_pkg)),
            )
        )
    return tuple(files)


def _check(title: str, offenders: list[str]) -> None:
    """Fail with one ``file:line -> what`` line per offender (no assert rewriting noise)."""
    if offenders:
        pytest.fail(f"{title} ({len(offenders)}):\n  " + "\n  ".join(offenders), pytrace=False)


# --------------------------------------------------------------------------
# Rule 1: layering
# --------------------------------------------------------------------------


def test_layering():
    offenders = [
        f"{f.rel}:{e.lineno} -> {e} (unit {f.unit!r} may import only {sorted(ALLOWED_IMPORTS[f.unit])})"
        for f in package_files()
        if f.unit in ALLOWED_IMPORTS
        for e in f.imports
        if e.unit not in ALLOWED_IMPORTS[f.unit]
    ]
    _check("layering violations", offenders)


# --------------------------------------------------------------------------
# Rules 2 and 3: batch/data stay low; training stays independent of bench/recipes
# --------------------------------------------------------------------------


def _forbidden(units: tuple[str, ...]) -> list[str]:
    return [
        f"{f.rel}:{e.lineno} -> {e}"
        for f in package_files()
        if f.unit in units
        for e in f.imports
        if e.unit in FORBIDDEN_IMPORTS[f.unit]
    ]


def test_batch_and_data_do_not_import_model_or_training_stack():
    offenders = _forbidden(("batch", "data"))
    _check("batch/data import modules/models/training/recipes/bench", offenders)


def test_training_does_not_import_bench_or_recipes():
    offenders = _forbidden(("training",))
    _check("training imports bench/recipes", offenders)


# --------------------------------------------------------------------------
# Rule 4: private names stay in their unit
# --------------------------------------------------------------------------


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_imports_across_units():
    offenders = []
    for f in package_files():
        if f.unit == ROOT:
            continue
        for e in f.imports:
            if e.unit == f.unit:
                continue
            # Any private component after the package name: a private module
            # (dfgr_torchrec.recipes._util) or a private name (from ... import _x).
            if any(_is_private(part) for part in e.module.split(".")[1:]):
                offenders.append(f"{f.rel}:{e.lineno} -> {e}")
    _check("private names imported from another unit", offenders)


# --------------------------------------------------------------------------
# Rule 5: size
# --------------------------------------------------------------------------


def _line_count(text: str) -> int:
    return len(text.splitlines())


def test_train_recipe_size():
    train = [f for f in package_files() if f.rel == TRAIN_RECIPE]
    if not train:
        pytest.skip(f"{TRAIN_RECIPE} does not exist")
    n = _line_count(train[0].text)
    if n > MAX_TRAIN_RECIPE_LINES:
        _check("recipe too long", [f"{TRAIN_RECIPE}:1 -> {n} lines (max {MAX_TRAIN_RECIPE_LINES})"])


def _functions(tree: ast.AST, prefix: str = ""):
    """Yield (qualname, node) for every function/method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            qualname = f"{prefix}{node.name}"
            yield qualname, node
            yield from _functions(node, f"{qualname}.<locals>.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def test_function_length():
    offenders = []
    for f in package_files():
        for qualname, node in _functions(f.tree):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                offenders.append(f"{f.rel}:{node.lineno} -> {qualname} ({n} lines)")
    _check(f"functions longer than {MAX_FUNCTION_LINES} lines", offenders)


# --------------------------------------------------------------------------
# Rule 6: self-checks
# --------------------------------------------------------------------------


def test_walker_is_not_vacuous():
    files = package_files()
    assert len(files) >= MIN_FILES, f"walker found only {len(files)} files under {PACKAGE_DIR}"
    units_with_edges = {f.unit for f in files if f.imports}
    missing = [u for u in UNITS_WITH_EDGES if u not in units_with_edges]
    assert not missing, f"no package import found in unit(s) {missing}: is the collector broken?"
    units = {f.unit for f in files}
    assert set(ALLOWED_IMPORTS) <= units, f"layered units missing: {set(ALLOWED_IMPORTS) - units}"


SYNTHETIC = """\
import os
import dfgr_torchrec.ops.jagged as j
from torch import nn


def build():
    from dfgr_torchrec.modules.stack import X
    def inner():
        return X
    return inner


class C:
    def method(self):
        if True:
            from dfgr_torchrec.recipes.train import _private_helper
        import importlib
        importlib.import_module("dfgr_torchrec.bench.memory")


from dfgr_torchrec import features
from . import heads
from ..ops import attention
"""


def test_collector_on_synthetic_source():
    edges = collect_imports(SYNTHETIC, current="dfgr_torchrec.modules.block")
    got = [(e.lineno, e.module, e.unit) for e in edges]
    assert got == [
        (2, "dfgr_torchrec.ops.jagged", "ops"),
        (7, "dfgr_torchrec.modules.stack.X", "modules"),
        (16, "dfgr_torchrec.recipes.train._private_helper", "recipes"),
        (18, "dfgr_torchrec.bench.memory", "bench"),
        (21, "dfgr_torchrec.features", "features"),
        (22, "dfgr_torchrec.modules.heads", "modules"),
        (23, "dfgr_torchrec.ops.attention", "ops"),
    ], got
    # Relative imports from a package __init__ resolve against the package itself.
    (edge,) = collect_imports("from .jagged import f\n", "dfgr_torchrec.ops", is_pkg=True)
    assert (edge.module, edge.unit) == ("dfgr_torchrec.ops.jagged.f", "ops")
    # The root package is its own unit.
    (edge,) = collect_imports("import dfgr_torchrec\n")
    assert edge.unit == ROOT
    # Private detection and function-length accounting.
    assert _is_private("_x") and not _is_private("__version__") and not _is_private("x")
    names = {q: n.end_lineno - n.lineno + 1 for q, n in _functions(ast.parse(SYNTHETIC))}
    assert names == {"build": 5, "build.<locals>.inner": 2, "C.method": 5}
