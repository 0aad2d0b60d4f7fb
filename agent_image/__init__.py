"""Build the agent image (`make agent-image`): wheels on the host, then the top-level Dockerfile
against whichever daemon the docker CLI reaches (DOCKER_HOST, DOCKER_CONTEXT).

The wheels directory (build/agent/) is the build context and holds exactly what the image
installs: vipcheck's wheel, built from this checkout; pyroute2's at the version installed here
(the node reader's one dependency: tests/unit/node_reader/test_light_imports.py); and pip's own,
which installs them in a base that has no pip. The lab builds the same image on a base of its
own (fixtures/lab/agent_base.py) through build_image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from vipcheck.untrusted import printable

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
WHEELS = REPO / "build" / "agent"
DEFAULT_BASE = "python:3.12-slim"
# Installed from PyPI's wheels at the versions this environment runs (pip: to install the rest).
PINNED = ("pyroute2", "pip")
Progress = Callable[[str], None]


class ImageError(Exception):
    """The image could not be built; the message is one line saying what failed."""


def build_image(
    image: str,
    base: str = DEFAULT_BASE,
    *,
    env: Mapping[str, str] | None = None,
    progress: Progress,
    wheels: Path = WHEELS,
) -> list[Path]:
    """Build the wheels, then the Dockerfile on `base`, tagged `image`; return the wheels."""
    built = build_wheels(wheels, progress)
    docker_build(image, base, env=env, progress=progress, wheels=wheels)
    return built


def docker_build(
    image: str,
    base: str,
    *,
    env: Mapping[str, str] | None = None,
    progress: Progress,
    wheels: Path = WHEELS,
) -> None:
    """Build the Dockerfile on `base`, tagged `image`, with the wheels directory as context."""
    docker_env = dict(os.environ if env is None else env)
    command = ["docker", "build", "--build-arg", f"BASE={base}", "-t", image]
    progress(f"docker build {image} on {base} ({_builder(docker_env)})")
    _run([*command, "-f", str(DOCKERFILE), str(wheels)], "build the agent image", docker_env)


def build_wheels(out: Path, progress: Progress) -> list[Path]:
    """Make `out` hold exactly the image's wheels: vipcheck's, built now, and the pinned ones
    (each downloaded once per version)."""
    out.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    kept = []
    for name in PINNED:
        pinned = f"{name}=={_installed(name)}"
        found = sorted(out.glob(f"{name}-{_installed(name)}-*.whl"))
        if not found:
            progress(f"downloading {pinned} (a wheel, once)")
            _run([*pip, "download", "--no-deps", "--only-binary", ":all:", "-d", str(out), pinned],
                 f"download {pinned}")  # fmt: skip
            found = sorted(out.glob(f"{name}-{_installed(name)}-*.whl"))
        kept += found[-1:]
    with tempfile.TemporaryDirectory(prefix="vipcheck-wheel-") as scratch:
        progress("building vipcheck's wheel")
        _run([*pip, "wheel", "--no-deps", "-w", scratch, str(REPO)], "build vipcheck's wheel")
        [wheel] = Path(scratch).glob("vipcheck-*.whl")
        kept.append(Path(shutil.move(wheel, out / wheel.name)))
    for stale in set(out.iterdir()) - set(kept):
        stale.unlink()
    return sorted(kept)


def _builder(env: dict[str, str]) -> str:
    """The legacy builder where the CLI has no buildx (the CLI refuses BuildKit without it);
    sets DOCKER_BUILDKIT=0 in env then. Says which builder builds."""
    if "DOCKER_BUILDKIT" not in env:
        buildx = subprocess.run(
            ["docker", "buildx", "version"], capture_output=True, env=env, check=False
        )
        if buildx.returncode != 0:
            env["DOCKER_BUILDKIT"] = "0"
    return "legacy builder" if env.get("DOCKER_BUILDKIT") == "0" else "BuildKit"


def _installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        raise ImageError(f"{name} is not installed here (make deps)") from None


def _run(command: list[str], purpose: str, env: Mapping[str, str] | None = None) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    except FileNotFoundError:
        raise ImageError(f"cannot {purpose}: {command[0]} is not installed") from None
    if result.returncode != 0:
        said = _last_line(result.stderr) or f"exit {result.returncode}"
        output = _last_line(result.stdout)
        shown = f"{said} (its last output: {output})" if output else said
        raise ImageError(f"cannot {purpose}: `{' '.join(command[:2])}` failed: {shown}")


def _last_line(text: str) -> str:
    """The last line with something on it, colour codes and control characters escaped."""
    lines = [line for line in text.splitlines() if line.strip()]
    return printable(lines[-1].strip(), one_line=True) if lines else ""
