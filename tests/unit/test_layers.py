"""Layers point one way: gathering and the transport know nothing of facts, checks or pytest."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "vipcheck"
LOWER = sorted([*(SRC / "gather").rglob("*.py"), SRC / "transport.py", SRC / "kind.py"])
ABOVE = (
    "vipcheck.facts",
    "vipcheck.expected",
    "vipcheck.checks",
    "vipcheck.cases",
    "vipcheck.plugin",
)


def package_of(path: Path) -> str:
    """The package relative imports in this file start from."""
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts if path.name == "__init__.py" else parts[:-1])


def imported_modules(source: str, package: str) -> set[str]:
    """Every module a file imports, `from vipcheck import facts` counted as vipcheck.facts."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            modules.add(base)
            modules.update(f"{base}.{alias.name}" for alias in node.names)
    return modules


def imports_of(path: Path) -> set[str]:
    return imported_modules(path.read_text(), package_of(path))


def reaches_above(module: str) -> bool:
    return any(module == above or module.startswith(f"{above}.") for above in ABOVE)


@pytest.mark.parametrize("path", LOWER, ids=lambda p: str(p.relative_to(SRC)))
def test_gathering_imports_nothing_above_it(path: Path) -> None:
    upward = sorted(m for m in imports_of(path) if reaches_above(m))
    assert upward == [], f"{path.relative_to(SRC)} imports {', '.join(upward)}"


@pytest.mark.parametrize(
    "source",
    [
        "import vipcheck.facts",
        "from vipcheck import facts",
        "from vipcheck.checks.handshake import check_vip_handshake",
        "from .. import expected",
        "from ..plugin import FACTS_KEY",
        "def later() -> None:\n    from vipcheck.cases import Case",
    ],
)
def test_every_spelling_of_an_upward_import_is_seen(source: str) -> None:
    assert any(reaches_above(m) for m in imported_modules(source, "vipcheck.gather"))


def test_neighbours_are_not_upward() -> None:
    modules = imported_modules("from . import nodes\nimport vipcheck.factsheet", "vipcheck.gather")
    assert modules == {"vipcheck.gather", "vipcheck.gather.nodes", "vipcheck.factsheet"}
    assert not any(reaches_above(m) for m in modules)


def test_only_the_transport_imports_testinfra() -> None:
    importers = [
        path.relative_to(SRC)
        for path in SRC.rglob("*.py")
        if any(m.split(".")[0] == "testinfra" for m in imports_of(path))
    ]
    assert importers == [Path("transport.py")]
