"""Configuration: typed records (``schema``) and the validating loader (``load``)."""

from fastgw.config.load import load_config, parse_config
from fastgw.config.schema import Config

__all__ = ["Config", "load_config", "parse_config"]
