"""The architecture page's Layout section lists the package as it is: every module, nothing gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dfgr_torchrec"
PAGE = ROOT / "docs" / "architecture.md"
MODULE = re.compile(r"(?<![\w./])(\w+\.py)\b")


def layout_block() -> list:
    """The lines of the Layout section's code block from ``dfgr_torchrec/`` to the next top-level folder."""
    section = PAGE.read_text().split("## Layout", 1)[1]
    block = section.split("```", 2)[1].splitlines()
    start = block.index("dfgr_torchrec/")
    end = next(i for i in range(start + 1, len(block)) if block[i] and not block[i].startswith(" "))
    return block[start + 1 : end]


def listed_modules() -> dict:
    """``{unit: {file names}}``; unit ``""`` is the package root. A line indented by two spaces starts
    a unit (``ops/ ...``) or lists root modules (``cli.py ...``); deeper lines continue the unit."""
    listed: dict = {}
    unit = None
    for line in layout_block():
        head = line[2:].split(" ", 1)[0] if line.startswith("  ") and not line.startswith("   ") else None
        if head is not None:
            unit = head[:-1] if head.endswith("/") else ""
        text = line[2 + len(head) :] if head is not None and head.endswith("/") else line
        listed.setdefault(unit, set()).update(MODULE.findall(text))
    return listed


def actual_modules() -> dict:
    actual: dict = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if path.name == "__init__.py":
            continue
        unit = rel.parts[0] if len(rel.parts) > 1 else ""
        actual.setdefault(unit, set()).add(path.name)
    return actual


def test_every_module_is_listed_and_every_listed_module_exists():
    listed, actual = listed_modules(), actual_modules()
    missing = sorted(f"{u}/{m}" if u else m for u in actual for m in actual[u] - listed.get(u, set()))
    gone = sorted(f"{u}/{m}" if u else m for u in listed for m in listed[u] - actual.get(u, set()) - {"__init__.py"})
    assert not missing, f"docs/architecture.md's Layout misses {missing}"
    assert not gone, f"docs/architecture.md's Layout lists modules that do not exist: {gone}"
    assert set(listed) - {""} == set(actual) - {""}, "the Layout's folders differ from the package's"


def test_the_parser_reads_the_units():
    listed = listed_modules()
    assert {"ops", "modules", "models", "study"} <= set(listed)
    assert "features.py" in listed[""] and "kernels.py" in listed["ops"]


def test_the_launch_line_names_every_torchx_component():
    import ast

    tree = ast.parse((ROOT / "launch" / "dfgr.py").read_text())
    components = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
    components -= {"node_resources"}  # a helper the components share, not a component
    [line] = [l for l in PAGE.read_text().splitlines() if l.startswith("launch/")]
    named = set(re.findall(r"\w+", line.split("components", 1)[1]))
    assert named == components, f"launch/ line names {sorted(named)}, launch/dfgr.py has {sorted(components)}"
