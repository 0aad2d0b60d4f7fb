"""Hypothesis strategies for names that others control, shared by the tests that feed them.

Each follows the owner's rule (the kernel's dev_valid_name, Kubernetes' node-name validation),
so a property can say "every name Linux allows parses unchanged" and "every name it refuses
is a ParseError", which is what keeps a forged name out of the model.
"""

from __future__ import annotations

from hypothesis import strategies as st

_NOT_IN_INTERFACE_NAMES = "/: \t\n\v\f\r\x00\xa0"

# Names Linux accepts for interfaces, shell metacharacters included: what vipcheck must quote.
LINUX_INTERFACE_NAMES = st.text(
    alphabet=st.characters(
        codec="utf-8",
        exclude_characters=_NOT_IN_INTERFACE_NAMES,
        categories=["L", "M", "N", "P", "S", "Cc", "Cf"],
    ),
    min_size=1,
    max_size=15,
).filter(
    lambda name: (
        len(data := name.encode()) <= 15
        and name not in (".", "..")
        and not set(data) & set(_NOT_IN_INTERFACE_NAMES.encode("latin-1"))
    )
)


@st.composite
def _with_forbidden_character(draw: st.DrawFn) -> str:
    """A name Linux allows with one character it forbids put somewhere in it."""
    name = draw(LINUX_INTERFACE_NAMES)
    at = draw(st.integers(0, len(name)))
    return name[:at] + draw(st.sampled_from(_NOT_IN_INTERFACE_NAMES)) + name[at:]


# Names Linux refuses: empty, "." and "..", a forbidden character, or longer than 15 bytes in
# UTF-8 (escape sequences and multi-byte letters included), or JSON's lone surrogate escapes.
NAMES_LINUX_REFUSES = st.one_of(
    st.sampled_from(["", ".", "..", "\ud800", "eth\udfff"]),
    _with_forbidden_character(),
    st.text(min_size=16).filter(lambda name: len(name.encode("utf-8", "surrogatepass")) > 15),
)

# Kubernetes Node names: DNS subdomains of lowercase labels, at most 253 characters.
_DNS_LABEL = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
KUBERNETES_NODE_NAMES = st.lists(_DNS_LABEL, min_size=1, max_size=4).map(".".join)
