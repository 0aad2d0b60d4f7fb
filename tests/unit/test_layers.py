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


# Run in a fresh interpreter: import the modules named, and say which module first imported each
# module loaded (the frame that ran the import statement, past importlib's own).
IMPORT_SCRIPT = """
import importlib, json, sys

importers = {}


class Witness:
    def find_spec(self, name, path=None, target=None):
        frame = sys._getframe(1)
        while frame is not None and "importlib" in frame.f_globals.get("__name__", "importlib"):
            frame = frame.f_back
        importers.setdefault(name, frame.f_globals["__name__"] if frame else "?")


sys.meta_path.insert(0, Witness())
sys.path[:0] = json.loads(sys.argv[1])
for name in sys.argv[2:]:
    importlib.import_module(name)
print(json.dumps({name: importers.get(name, "") for name in sys.modules}))
"""


def loaded_by(modules: Sequence[str], path: Sequence[Path] = ()) -> dict[str, str]:
    """Every module in `sys.modules` after a fresh interpreter imports `modules` (with `path`
    first on sys.path), each with the module that imported it first ('' if loaded at start)."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_SCRIPT, json.dumps([str(p) for p in path]), *modules],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded: dict[str, str] = json.loads(done.stdout)
    return loaded


def loaded_from_above(
    index: int, layers: Sequence[Layer], modules: Sequence[str], path: Sequence[Path] = ()
) -> dict[str, list[str]]:
    """What importing layer `index` loads from higher layers, by the chain of imports that led
    there: {"a.low -> a.middle -> a.high": [every higher module loaded through it]}."""
    loaded = loaded_by([m for m in modules if layer_of(m, layers) == index], path)

    def higher(name: str) -> bool:
        return (layer_of(name, layers) or -1) > index

    def entry(name: str) -> str:
        """The first higher module on the way to `name`."""
        while higher(importer := loaded.get(name, "")):
            name = importer
        return name

    def chain(name: str) -> str:
        """`name` and the modules that imported it, back to the module of this layer."""
        links = [name]
        while (importer := loaded.get(links[-1], "")) in loaded:
            links.append(importer)
            if layer_of(importer, layers) == index:
                break
        return " -> ".join(reversed(links))

    found: dict[str, list[str]] = {}
    for name in sorted(filter(higher, loaded)):
        found.setdefault(chain(entry(name)), []).append(name)
    return found


def describe(found: dict[str, list[str]], layers: Sequence[Layer]) -> str:
    """`a -> b -> vipcheck.checks.base loads checks (vipcheck.checks and 13 more), facts (...)`."""
    parts = []
    for route, loaded in found.items():
        by_layer: dict[str, list[str]] = {}
        for name in loaded:
            by_layer.setdefault(layers[layer_of(name, layers) or 0].name, []).append(name)
        shown = ", ".join(
            f"{layer} ({names[0]}{f' and {len(names) - 1} more' if len(names) > 1 else ''})"
            for layer, names in by_layer.items()
        )
        parts.append(f"{route} loads {shown}")
    return "; ".join(parts)


def test_the_table_is_read_bottom_up_with_its_modules() -> None:
    names = [layer.name for layer in LAYERS]
    assert names[:3] == ["vocabulary", "model", "parse"], names
    assert names[-1] == "command", names
    assert all(layer.modules for layer in LAYERS), LAYERS


def test_the_diagram_stacks_the_tables_layers_top_down() -> None:
    # The picture at the top of architecture.md is the table drawn, highest layer first.
    diagram = ARCHITECTURE.read_text().split("```\n", 2)[1]
    drawn = [re.split(r"\s{2,}", line.strip())[0] for line in diagram.splitlines()[2:]]
    assert drawn == [layer.name for layer in reversed(LAYERS)]


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
        "layered.low -> layered.middle": ["layered.high", "layered.middle"]
    }
    assert loaded_from_above(1, layers, modules, [tmp_path]) == {
        "layered.middle -> layered.high": ["layered.high"]
    }
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
    ("library", "importers"),
    [
        ("testinfra", [Path("transport.py")]),
        # The cluster's reading; and the agents' exec, loaded only for --via-agents.
        ("kubernetes", [Path("gather/agent_exec.py"), Path("gather/cluster.py")]),
        ("websocket", [Path("gather/agent_exec.py")]),
        ("urllib3", [Path("gather/cluster.py")]),
    ],
)
def test_few_modules_import_each_heavy_library(library: str, importers: list[Path]) -> None:
    found = [path.relative_to(SRC) for path in SRC.rglob("*.py") if library in imports_of(path)]
    assert sorted(found) == importers
