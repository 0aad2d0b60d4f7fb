"""The one place vipcheck touches pytest's private API: rootdir and config found again.

pytest settles rootdir and the config file from the first arguments that are not options, before
plugins add theirs, so `pytest --from-snapshot /elsewhere` in a checkout took /elsewhere for a test
path, looked for configuration there and collected the wrong tests. `settle_rootdir` decides again
from the real test paths once our options are known, which means redoing what `Config._preparse`
did: Config's `_rootpath`, `_inipath`, `_inicfg`, `_ignored_config_files`, `_inicache` and
`_parser`, its `_configure_python_path()`, and `_pytest`'s `determine_setup`. The `vipcheck`
command never needs it (it pins --rootdir and -c, vipcheck.cli); `pytest` in a checkout does.

Checked with the pytest releases in `CHECKED_PYTEST`; tests/unit/test_plugin.py fails on any
other, so an upgrade re-reads `Config._preparse` and `determine_setup` before widening it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import pytest
from _pytest.config.findpaths import determine_setup

# The pytest releases (major, minor) this module was checked with, lowest and highest: 9.1.0,
# 9.1.1 and 9.2.0 pass tests/unit/test_invocation.py; 9.0 does not (its Config keeps the ini
# values in `inicfg`, so the new config file's testpaths and addopts went unread).
CHECKED_PYTEST = ((9, 1), (9, 2))


def settle_rootdir(
    early_config: pytest.Config, args: list[str], path_options: Iterable[str]
) -> None:
    """Find rootdir and config again when pytest took a path option's value for a test path.

    path_options: the names pytest stores those options under. Nothing changes when the first
    decision stands: an explicit -c or --rootdir, no path option's value among the arguments,
    or the same rootdir and config file found from the real test paths.
    """
    namespace = early_config.known_args_namespace
    if namespace.inifilename or namespace.rootdir:
        return
    here = early_config.invocation_params.dir
    given = {
        (here / str(v)).resolve() for name in path_options if (v := getattr(namespace, name, None))
    }
    taken = {(here / arg).resolve() for arg in args if not arg.startswith("-")}
    if not given & taken:
        return
    rootpath, inipath, inicfg, ignored = determine_setup(
        inifile=None,
        override_ini=namespace.override_ini,
        args=namespace.file_or_dir,
        rootdir_cmd_arg=None,
        invocation_dir=here,
    )
    if (rootpath, inipath) == (early_config.rootpath, early_config.inipath):
        return
    # What Config._preparse did after _initini, again with the new rootdir and config file:
    # their addopts prepended, the arguments parsed again, confcutdir moved with them (unless the
    # user gave one), the ini's pythonpath applied.
    old_cutdir = str(early_config.inipath.parent if early_config.inipath else early_config.rootpath)
    early_config._rootpath = rootpath
    early_config._inipath = inipath
    early_config._inicfg = inicfg
    early_config._ignored_config_files = ignored
    early_config._inicache.clear()
    early_config._parser.extra_info.update(rootdir=str(rootpath), inifile=str(inipath))
    args[:] = [*early_config.getini("addopts"), *args]
    early_config.known_args_namespace = early_config._parser.parse_known_args(
        args, namespace=copy.copy(early_config.option)
    )
    if namespace.confcutdir in (None, old_cutdir):
        cutdir = inipath.parent if inipath else rootpath
        early_config.known_args_namespace.confcutdir = str(cutdir)
    early_config._configure_python_path()
