"""Configurations of other gateways, read as fastgw configurations.

``fastgw import ocelot`` writes a translation out for review. ``config.load.load_config`` asks
``foreign_document`` about every ``.json`` file first, so that ``fastgw run -c ocelot.json`` (and
``check``, ``routes`` and reloads) reads an Ocelot file directly: translated in memory, with the
translation's report logged.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["foreign_document"]

log = logging.getLogger("fastgw.importers")


def foreign_document(path: str, text: str) -> dict[str, Any] | None:
    """The fastgw document an Ocelot file at ``path`` (``text``) stands for, or None when the file
    is not one (it is then read as fastgw's own JSON). Raises ``ConfigError`` naming the Ocelot key
    when the file is an Ocelot configuration that cannot be translated."""
    if not path.lower().endswith(".json"):
        return None
    from fastgw.importers.ocelot import is_ocelot_document, parse_jsonc, translate_files

    # JSON with comments, as Ocelot's files are; a file that is not even that is an error here,
    # named by line and column as fastgw's own JSON parser would name it.
    if not is_ocelot_document(parse_jsonc(text)):
        return None
    translation = translate_files([path])
    translation.report.log(log)
    translation.require_routes()
    return translation.document
