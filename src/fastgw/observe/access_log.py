"""The access log: one JSON line per request, buffered and written in batches.

The log itself is compiled (``_access_log.pyx``, whose docstring says how a line is made and
when it is written): the hot path's one call per request writes the line's bytes straight from
the exchange's fields. What stays here is the choice a (re)load makes between keeping the
running log and starting another.
"""

from __future__ import annotations

from fastgw.config.schema import AccessLogConfig
from fastgw.observe._access_log import AccessLog

__all__ = ["AccessLog", "access_log_for"]


def access_log_for(config: AccessLogConfig | None, running: AccessLog | None) -> AccessLog | None:
    """The log a (re)loaded configuration asks for: the running one when its section is unchanged,
    its file reopened (a reload after log rotation writes to a new file at the path)."""
    if config is None:
        return None
    if running is not None and running.config == config:
        running.reopen()
        return running
    return AccessLog(config)
