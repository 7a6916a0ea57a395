"""Configuration: typed records (``schema``) and the validating loader.

``load`` reads a file (or text: an etcd key's value) into a plain document and hands it to
``document``, which reads each section with its module (``listeners``, ``discovery`` for
``registries`` and an upstream's ``discovery``, ``upstreams``, ``routes`` with ``aggregates``,
``operations``) and checks what spans sections. ``validate`` is the toolkit of typed readers they
are written with (plugins use it too); ``syntax`` holds the HTTP syntax several sections share.
"""

from fastgw.config.load import load_config, load_text, parse_config
from fastgw.config.schema import Config

__all__ = ["Config", "load_config", "load_text", "parse_config"]
