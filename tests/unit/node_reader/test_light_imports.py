"""The node reader imports nothing but the standard library, vipcheck and pyroute2.

The agent image (Dockerfile) installs the package without its dependencies, pyroute2 alone
beside it: the vipcheck command's own (pytest, the kubernetes client, YAML, msgspec) would only
make the image bigger on every node. A new import of them on the reader's path fails here.
"""

from __future__ import annotations

import subprocess
import sys

LEFT_OUT = ("pytest", "_pytest", "kubernetes", "yaml", "msgspec", "testinfra", "xdist", "urllib3")
BLOCKER = """
import importlib.abc, sys
class LeftOut(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {left_out!r}:
            raise ImportError(f"the agent image has no {{name}}")
sys.meta_path.insert(0, LeftOut())
import vipcheck.node_reader.cli
extra = {{m.split(".")[0] for m in sys.modules}} - set(sys.stdlib_module_names)
print(" ".join(sorted(m for m in extra if not m.startswith("_"))))
"""


def test_the_reader_imports_only_vipcheck_and_pyroute2() -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER.format(left_out=set(LEFT_OUT))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["pyroute2", "vipcheck"], result.stdout
