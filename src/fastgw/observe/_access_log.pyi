"""The compiled access log (_access_log.pyx): one JSON line per request, written in batches."""

from fastgw._proxy import Exchange
from fastgw.config.schema import AccessLogConfig

class AccessLog:
    """Lines are recorded into one buffer, written when it holds ``buffer_bytes`` or
    ``flush_interval`` after its first line; ``flush`` writes at once (drain, reload)."""

    @property
    def config(self) -> AccessLogConfig: ...
    @property
    def fd(self) -> int:
        """The sink's descriptor once the first write opened it, else -1."""
    @property
    def successor(self) -> AccessLog | None: ...
    @property
    def retired(self) -> bool: ...
    @property
    def write_errors(self) -> int: ...
    @property
    def buffered(self) -> int:
        """Bytes of lines recorded and not written yet."""
    def __init__(self, config: AccessLogConfig) -> None: ...
    def record(self, x: Exchange, status: int, now: float) -> None:
        """Called by the exchange as it ends (status 0: no response was sent)."""
    def on_timer(self) -> None: ...
    def flush(self) -> None:
        """Write what is buffered, in one call (a short write is completed, never dropped)."""
    def open_sink(self) -> int: ...
    def reopen(self) -> None:
        """Write what is buffered and close the file: the next line opens the path again."""
    def retire(self, successor: AccessLog | None) -> None:
        """A reload replaced this log: write what is left, close the file, pass on late lines."""
