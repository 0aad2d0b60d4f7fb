"""make agent-image's docker step: the builder it picks, and a failed build told in one line."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent_image import ImageError, docker_build

pytestmark = pytest.mark.skipif(shutil.which("docker") is None, reason="needs a docker CLI")


def test_a_build_the_daemon_cannot_take_is_one_line_naming_it(tmp_path: Path) -> None:
    said: list[str] = []
    env = {**os.environ, "DOCKER_HOST": "tcp://127.0.0.1:9"}
    env.pop("DOCKER_BUILDKIT", None)
    with pytest.raises(ImageError) as raised:
        docker_build("vipcheck-agent:test", "python:3.12-slim", env=env, progress=said.append,
                     wheels=tmp_path)  # fmt: skip
    message = str(raised.value)
    assert message.startswith("cannot build the agent image: `docker build` failed: ")
    assert "127.0.0.1:9" in message
    assert "\n" not in message
    # Without buildx the CLI refuses BuildKit: the legacy builder is used then, and said.
    buildx = subprocess.run(["docker", "buildx", "version"], capture_output=True, check=False)
    builder = "BuildKit" if buildx.returncode == 0 else "legacy builder"
    assert said == [f"docker build vipcheck-agent:test on python:3.12-slim ({builder})"]
