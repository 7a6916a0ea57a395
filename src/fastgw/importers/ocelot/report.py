"""What a translation did with every Ocelot key: mapped, approximated (how), not supported (why),
or ignored.

Entries are grouped by the object they belong to (``ocelot.json: Routes[3]``), with a heading that
says which fastgw routes the object became. Rendered for ``fastgw import ocelot`` in full; logged by
``fastgw run -c ocelot.json`` as a summary line plus one line per entry that is not a plain mapping.

    Ocelot configuration: ocelot.json
      read as: Routes (Ocelot 16.0 and later); rate limiting as Ocelot 24.1 and later (uses Wait)
      41 mapped, 5 approximated, 1 not supported, 2 ignored

    ocelot.json: Routes[0]  GET /api/products/{id} -> route products-id
      mapped         UpstreamPathTemplate   path /api/products/{*id}, and /api/products (...)
      approximated   RouteIsCaseSensitive   false: matched as written, case-sensitively (...)
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

__all__ = ["Report", "Status"]


class Status(enum.Enum):
    MAPPED = "mapped"
    APPROXIMATED = "approximated"
    UNSUPPORTED = "not supported"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class Entry:
    file: str
    key_path: str  # "Routes[3].QoSOptions.DurationOfBreak"
    status: Status
    detail: str

    @property
    def owner(self) -> str:
        """The object this key belongs to for grouping: ``Routes[3]``, ``GlobalConfiguration``..."""
        head = self.key_path.split(".", 1)[0]
        return head


_WIDTH = max(len(status.value) for status in Status) + 2
_LOG_LEVELS = {
    Status.MAPPED: logging.DEBUG,
    Status.APPROXIMATED: logging.INFO,
    Status.IGNORED: logging.INFO,
    Status.UNSUPPORTED: logging.WARNING,
}


class Report:
    """Entries in the order the translation made them, and headings for the objects."""

    __slots__ = ("entries", "files", "headings", "notes")

    def __init__(self, files: list[str]) -> None:
        self.files = files
        self.entries: list[Entry] = []
        self.headings: dict[tuple[str, str], str] = {}  # (file, owner) -> "GET /x -> route x"
        self.notes: list[str] = []  # "read as: ..." lines under the title

    def add(self, file: str, key_path: str, status: Status, detail: str) -> None:
        self.entries.append(Entry(file, key_path, status, detail))

    def mapped(self, file: str, key_path: str, detail: str) -> None:
        self.add(file, key_path, Status.MAPPED, detail)

    def approximated(self, file: str, key_path: str, detail: str) -> None:
        self.add(file, key_path, Status.APPROXIMATED, detail)

    def unsupported(self, file: str, key_path: str, detail: str) -> None:
        self.add(file, key_path, Status.UNSUPPORTED, detail)

    def ignored(self, file: str, key_path: str, detail: str) -> None:
        self.add(file, key_path, Status.IGNORED, detail)

    def head(self, file: str, owner: str, heading: str) -> None:
        self.headings[(file, owner)] = heading

    def count(self, status: Status) -> int:
        return sum(1 for entry in self.entries if entry.status is status)

    def summary(self) -> str:
        return ", ".join(f"{self.count(status)} {status.value}" for status in Status)

    def render(self, *, full: bool = True) -> str:
        """The report as text; ``full=False`` leaves out the plain mappings."""
        lines = [f"Ocelot configuration: {', '.join(self.files)}"]
        lines += [f"  {note}" for note in self.notes]
        lines.append(f"  {self.summary()}")
        groups: dict[tuple[str, str], list[Entry]] = {}
        for entry in self.entries:
            if full or entry.status is not Status.MAPPED:
                groups.setdefault((entry.file, entry.owner), []).append(entry)
        for (file, owner), entries in groups.items():
            heading = self.headings.get((file, owner))
            lines.append("")
            lines.append(f"{file}: {owner}" + (f"  {heading}" if heading else ""))
            for entry in entries:
                key = entry.key_path[len(owner) + 1 :] if entry.key_path != owner else "(whole)"
                lines.append(f"  {entry.status.value:<{_WIDTH}}{key}: {entry.detail}")
        return "\n".join(lines) + "\n"

    def log(self, logger: logging.Logger) -> None:
        """One summary line, then each entry at a level by its status (plain mappings at DEBUG)."""
        logger.info("Ocelot configuration %s translated: %s", ", ".join(self.files), self.summary())
        for note in self.notes:
            logger.info("Ocelot configuration %s", note)
        for entry in self.entries:
            level = _LOG_LEVELS[entry.status]
            if logger.isEnabledFor(level):
                logger.log(
                    level, "%s: %s: %s: %s", entry.file, entry.key_path, entry.status.value, entry.detail
                )
