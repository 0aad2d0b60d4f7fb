"""Thresholds the checks use, with their defaults in this one place (ini options override them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields


def _setting(default: int, help_text: str) -> int:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True, slots=True)
class Settings:
    """Tunable limits; each field is also the ini option `vipcheck_<field>`."""

    tcpfin_timeout_max_s: int = _setting(
        30, "IPVS tcpfin (FIN_WAIT) timeout above this fails; the founding incident had 120 s"
    )
    syn_recv_max: int = _setting(
        0, "SYN_RECV entries tolerated per virtual service and destination on a node"
    )
    conntrack_usage_max_percent: int = _setting(
        80, "nf_conntrack_count above this share of nf_conntrack_max fails"
    )


DEFAULTS = Settings()


def setting_help() -> dict[str, str]:
    """Each setting's name and one line of help, for registering ini options."""
    return {f.name: f"{f.metadata['help']} (default {f.default})" for f in fields(Settings)}


class SettingsError(ValueError):
    """An ini value that is not what its setting takes, in one line naming the option."""


def settings_from(ini: Callable[[str], object]) -> Settings:
    """The Settings of a run, from its ini values: ini(option) is the value of `vipcheck_<field>`
    (None, or the default's text, when not set). The one reader, for a pytest run (the plugin)
    and for `vipcheck diff` judging snapshots, so both judge with the same thresholds."""
    values = {}
    for name in setting_help():
        raw = ini(f"vipcheck_{name}")
        if raw is not None:
            values[name] = setting_value(name, raw)
    return Settings(**values)


def setting_value(name: str, raw: object) -> int:
    """The value of the ini option `vipcheck_<name>`, as every reader of it takes it."""
    try:
        return int(str(raw))
    except ValueError:
        raise SettingsError(f"ini option vipcheck_{name}: not an integer: {raw!r}") from None
