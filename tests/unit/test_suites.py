"""The catalogue and the suites cannot drift apart, and the package ships every part of vipcheck."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import tomllib
from collections import defaultdict
from pathlib import Path

from vipcheck.checks import CATALOGUE
from vipcheck.plugin import MARKER

ROOT = Path(__file__).resolve().parents[2]
# By name: the package maps vipcheck.suites to suites/, which type checkers do not follow.
SUITES = importlib.import_module("vipcheck.suites")


def suite_tests() -> dict[str, list[str]]:
    """Each suite test function, by module:name, with the check ids its markers name."""
    tests: dict[str, list[str]] = {}
    for module_info in pkgutil.iter_modules(SUITES.__path__):
        module = importlib.import_module(f"vipcheck.suites.{module_info.name}")
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("test"):
                marks = getattr(function, "pytestmark", [])
                ids = [mark.args[0] for mark in marks if mark.name == MARKER]
                tests[f"{module_info.name}:{name}"] = ids
    return tests


def test_every_suite_test_names_exactly_one_check() -> None:
    assert {test: ids for test, ids in suite_tests().items() if len(ids) != 1} == {}


def test_every_check_has_exactly_one_suite_test_and_every_named_check_exists() -> None:
    tests_of: defaultdict[str, list[str]] = defaultdict(list)
    for test, ids in suite_tests().items():
        for check_id in ids:
            tests_of[check_id].append(test)
    catalogued = {check.id for check in CATALOGUE}
    assert sorted(set(tests_of) - catalogued) == []
    assert sorted(catalogued - set(tests_of)) == []
    assert {check_id: tests for check_id, tests in tests_of.items() if len(tests) > 1} == {}


def test_the_suites_installed_are_the_checkouts() -> None:
    assert Path(str(SUITES.__file__)).parent == ROOT / "suites"


def test_every_package_of_vipcheck_is_shipped() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(path.parent.relative_to(ROOT / "src").parts)
        for path in (ROOT / "src").rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == found | {"vipcheck.suites"}
    assert setuptools["package-dir"]["vipcheck.suites"] == "suites"
