"""The node script run by dash against a kernel the test writes: /proc/modules, /sys/module,
modules.builtin and /proc/net pointed at files under a directory, only the directory's stub
tools (and cat) on PATH. How tests prove a tool is not run where it would load a module."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

from vipcheck.gather.node_script import split_node_frames
from vipcheck.snapshot import NodeSnapshot

KERNEL = "6.1.0-test"


def run_on_fake_kernel(
    script: str,
    directory: Path,
    *,
    proc_modules: str | None = None,
    builtin: str | None = None,
    sys_modules: Iterable[str] = (),
    ip_tables_names: str | None = None,
) -> NodeSnapshot:
    """What the script gathers with these kernel files (None: absent) and the stubs in
    directory; sys_modules are the names /sys/module lists."""
    root = directory / "root"
    (root / "sys/module").mkdir(parents=True)
    for name in sys_modules:
        (root / "sys/module" / name).mkdir()
    (root / "net").mkdir()
    if proc_modules is not None:
        (root / "modules").write_text(proc_modules)
    if builtin is not None:
        (root / f"lib/modules/{KERNEL}").mkdir(parents=True)
        (root / f"lib/modules/{KERNEL}/modules.builtin").write_text(builtin)
    if ip_tables_names is not None:
        (root / "net/ip_tables_names").write_text(ip_tables_names)
    uname = directory / "uname"
    uname.write_text(f"#!/bin/sh\necho {KERNEL}\n")
    uname.chmod(0o755)
    cat = shutil.which("cat")
    assert cat is not None
    if not (directory / "cat").exists():
        (directory / "cat").symlink_to(cat)
    pointed = (
        script.replace(
            "vipcheck_proc_modules=/proc/modules", f"vipcheck_proc_modules={root}/modules"
        )
        .replace("vipcheck_sys_module=/sys/module", f"vipcheck_sys_module={root}/sys/module")
        .replace("vipcheck_lib_modules=/lib/modules", f"vipcheck_lib_modules={root}/lib/modules")
        .replace("vipcheck_proc_net=/proc/net", f"vipcheck_proc_net={root}/net")
    )
    assert pointed != script, "the script names none of the kernel paths a test can point"
    dash = shutil.which("dash")
    if dash is None:
        pytest.skip("dash is not installed")
    result = subprocess.run(
        [dash, "-c", pointed], capture_output=True, text=True, timeout=60,
        env={"PATH": str(directory)}, check=False,
    )  # fmt: skip
    frames = split_node_frames(result.stdout)
    assert frames.complete, result.stderr
    return NodeSnapshot("node-1", frames.files, missing=frames.missing)
