"""Ocelot's configuration (``ocelot.json``, ``ocelot.*.json``) translated into fastgw's.

``translate_files(["ocelot.json"])`` returns a ``Translation``: the fastgw document (a dict that
``config.parse_config`` accepts) and a ``Report`` of what became of every Ocelot key. Modules, in
the order a translation uses them: ``reading`` (JSON with comments, keys in any case), ``translate``
(files merged, the steps), ``global_config``, ``discovery`` (the service discovery provider),
``routes`` (with ``paths``, ``upstreams``, ``ratelimit``, ``policies``, ``headers``),
``aggregates``, ``dynamic`` (``DynamicRoutes``), ``ordering``, ``report``.
"""

from fastgw.importers.ocelot.reading import parse_jsonc
from fastgw.importers.ocelot.report import Report, Status
from fastgw.importers.ocelot.translate import Translation, is_ocelot_document, translate_files

__all__ = ["Report", "Status", "Translation", "is_ocelot_document", "parse_jsonc", "translate_files"]
