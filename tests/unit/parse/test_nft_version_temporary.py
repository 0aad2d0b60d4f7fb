"""`nft --version` read to a tuple (temporary: the leftovers branch owns and tests this input)."""

from __future__ import annotations

import pytest

from vipcheck.parse import ParseError
from vipcheck.parse.nft_version import parse_nft_version

SOURCE = "nodes/node-1/nft-version.txt"


def test_the_version_after_a_prompt_or_the_command_line() -> None:
    assert parse_nft_version("nftables v1.0.6 (Lester Gooch #5)\n", SOURCE) == (1, 0, 6)
    assert parse_nft_version("$ nft --version\nnftables v0.9.8 (E.D.S.)\n", SOURCE) == (0, 9, 8)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", f"{SOURCE}: empty"),
        ("\n\nnft: command not found\n", f"{SOURCE}:3: expected `nftables vX.Y.Z`"),
    ],
)
def test_no_version_line_names_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ParseError) as error:
        parse_nft_version(text, SOURCE)
    assert str(error.value).startswith(message)
