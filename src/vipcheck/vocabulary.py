"""Words every layer speaks: how bad a finding is, how progress is reported.

A leaf module: it imports nothing of vipcheck, so options, gathering and the reports can name a
severity without loading the checks (`vipcheck.checks` loads the whole catalogue on import).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

# One line of progress for the person watching a run ("cluster: nodes.json: 3 items").
Progress = Callable[[str], None]


class Severity(StrEnum):
    """How bad a violation is for traffic through Service VIPs."""

    CRITICAL = "critical"  # connections fail now
    WARNING = "warning"  # connections fail under load, churn or later
    INFO = "info"  # worth knowing; nothing fails because of it
