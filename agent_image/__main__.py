"""`python -m agent_image [--image NAME] [--base IMAGE]`: what `make agent-image` runs."""

from __future__ import annotations

import argparse
import sys

from agent_image import DEFAULT_BASE, ImageError, build_image
from vipcheck.manifests import DEFAULT_IMAGE


def _progress(message: str) -> None:
    print(f"agent-image: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent_image",
        description="Build the vipcheck agent image from this checkout, against the daemon "
        "the docker CLI reaches (DOCKER_HOST).",
    )
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"the tag (default {DEFAULT_IMAGE})")
    parser.add_argument("--base", default=DEFAULT_BASE, help=f"FROM (default {DEFAULT_BASE})")
    args = parser.parse_args(argv)
    try:
        build_image(args.image, args.base, progress=_progress)
    except ImageError as error:
        print(f"agent-image: error: {error}", file=sys.stderr)
        return 1
    _progress(f"built {args.image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
