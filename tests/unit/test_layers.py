"""Layers point one way, counted by what an import really loads, not by what a file names.

The rule is the layer table of docs/architecture.md, read here: each layer is imported in a fresh
interpreter, and no module of a higher layer may then be in `sys.modules`. A direct import is
caught, and so is a chain (gather imports options, options imports a module that loads the
catalogue), which a look at each file's own imports misses.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "vipcheck"
SUITES = ROOT / "suites"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
TABLE_HEADING = "## Layers, bottom up"
MODULE_NAME = re.compile(r"`(vipcheck(?:\.\w+)*)`")
# Imported with the vipcheck package whatever is imported: it holds `__version__` only.
PACKAGE_ROOT = "vipcheck"


@dataclass(frozen=True, slots=True)
class Layer:
    name: str
    modules: tuple[str, ...]  # each covers itself and, for a package, every module in it


def read_layers(page: str) -> list[Layer]:
    """The rows of the page's layer table, bottom up: a layer's name and its modules."""
    section = page.split(TABLE_HEADING, 1)[1]
    layers: list[Layer] = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3 or cells[0] in ("layer", "---"):
            if layers and not line.startswith("|"):
                break  # the end of the table
            continue
        layers.append(Layer(cells[0], tuple(MODULE_NAME.findall(cells[1]))))
    return layers


LAYERS = read_layers(ARCHITECTURE.read_text())


def layer_of(module: str, layers: Sequence[Layer]) -> int | None:
    """The index of the layer whose most specific entry covers `module`; None if none does."""
    best: tuple[int, int] | None = None  # (length of the entry, layer index)
    for index, layer in enumerate(layers):
        for entry in layer.modules:
            if (module == entry or module.startswith(f"{entry}.")) and (
                best is None or len(entry) > best[0]
            ):
                best = (len(entry), index)
    return None if best is None else best[1]


def module_name(path: Path, root: Path, package: str) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join((package, *(parts[:-1] if parts[-1] == "__init__" else parts)))


def our_modules() -> list[str]:
    """Every module of the package and of the installed suites, the package root aside."""
    names = [module_name(path, SRC, "vipcheck") for path in SRC.rglob("*.py")]
    names += [module_name(path, SUITES, "vipcheck.suites") for path in SUITES.glob("*.py")]
    return sorted(name for name in names if name != PACKAGE_ROOT)


def loaded_by(modules: Sequence[str], path: Sequence[Path] = ()) -> set[str]:
    """The modules in `sys.modules` after a fresh interpreter imports `modules` (and `path`)."""
    script = (
        "import importlib, json, sys\n"
        f"sys.path[:0] = {[str(p) for p in path]!r}\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *modules],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def loaded_from_above(
    index: int, layers: Sequence[Layer], modules: Sequence[str], path: Sequence[Path] = ()
) -> dict[str, list[str]]:
    """For each module of layer `index` that loads a module of a higher layer: those modules.

    The layer is imported whole first (one interpreter); only when that loads something above
    is each of its modules imported alone, to name the culprit.
    """
    mine = [m for m in modules if layer_of(m, layers) == index]

    def above(loaded: set[str]) -> list[str]:
        return sorted(m for m in loaded if (layer_of(m, layers) or -1) > index)

    if not above(loaded_by(mine, path)):
        return {}
    culprits = {module: above(loaded_by([module], path)) for module in mine}
    return {module: found for module, found in culprits.items() if found}


def describe(found: dict[str, list[str]], layers: Sequence[Layer]) -> str:
    """`importing M loads checks (vipcheck.checks and 13 more), facts (vipcheck.facts)`."""
    parts = []
    for module, loaded in found.items():
        by_layer: dict[str, list[str]] = {}
        for name in loaded:
            by_layer.setdefault(layers[layer_of(name, layers) or 0].name, []).append(name)
        shown = ", ".join(
            f"{layer} ({names[0]}{f' and {len(names) - 1} more' if len(names) > 1 else ''})"
            for layer, names in by_layer.items()
        )
        parts.append(f"importing {module} loads {shown}")
    return "; ".join(parts)


def test_the_table_is_read_bottom_up_with_its_modules() -> None:
    names = [layer.name for layer in LAYERS]
    assert names[:3] == ["vocabulary", "model", "parse"], names
    assert names[-1] == "command", names
    assert all(layer.modules for layer in LAYERS), LAYERS


def test_every_module_is_in_one_layer_and_every_entry_is_a_module() -> None:
    modules = our_modules()
    unplaced = [m for m in modules if layer_of(m, LAYERS) is None]
    assert unplaced == [], f"in no row of {ARCHITECTURE.name}'s layer table: {unplaced}"
    entries = [entry for layer in LAYERS for entry in layer.modules]
    unknown = [e for e in entries if not any(m == e or m.startswith(f"{e}.") for m in modules)]
    assert unknown == [], f"the layer table names modules that do not exist: {unknown}"
    assert len(entries) == len(set(entries)), entries


@pytest.mark.parametrize("index", range(len(LAYERS)), ids=[layer.name for layer in LAYERS])
def test_a_layer_loads_nothing_above_it(index: int) -> None:
    found = loaded_from_above(index, LAYERS, our_modules())
    assert found == {}, (
        f"layer {LAYERS[index].name}: {describe(found, LAYERS)}; "
        f"{ARCHITECTURE.name} says a layer loads only the layers below it"
    )


def test_a_chain_of_imports_is_caught_and_its_start_named(tmp_path: Path) -> None:
    """low imports middle, which imports high: low's own file names no higher layer."""
    package = tmp_path / "layered"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("import layered.middle\n")
    (package / "middle.py").write_text("import layered.high\n")
    (package / "high.py").write_text("")
    (package / "other_low.py").write_text("")
    layers = [
        Layer("low", ("layered.low", "layered.other_low")),
        Layer("middle", ("layered.middle",)),
        Layer("high", ("layered.high",)),
    ]
    modules = ["layered.low", "layered.other_low", "layered.middle", "layered.high"]
    assert loaded_from_above(0, layers, modules, [tmp_path]) == {
        "layered.low": ["layered.high", "layered.middle"]
    }
    assert loaded_from_above(1, layers, modules, [tmp_path]) == {"layered.middle": ["layered.high"]}
    assert loaded_from_above(2, layers, modules, [tmp_path]) == {}


def test_the_plugin_and_the_command_load_no_kubernetes_client() -> None:
    """Every pytest session where vipcheck is installed loads the plugin: the kubernetes client
    and its urllib3 cost 0.15 s to import and are needed only when a cluster is read."""
    loaded = {name.split(".")[0] for name in loaded_by(["vipcheck.plugin", "vipcheck.cli"])}
    assert loaded & {"kubernetes", "urllib3"} == set()


def imports_of(path: Path) -> set[str]:
    """The top-level names of every module a file imports, at any depth of the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    ("library", "importer"),
    [
        ("testinfra", Path("transport.py")),
        ("kubernetes", Path("gather/cluster.py")),
        ("urllib3", Path("gather/cluster.py")),
    ],
)
def test_one_module_imports_each_heavy_library(library: str, importer: Path) -> None:
    importers = [path.relative_to(SRC) for path in SRC.rglob("*.py") if library in imports_of(path)]
    assert importers == [importer]
