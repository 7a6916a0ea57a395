"""Custom aggregators named in aggregate routes' configs by the tests (``module:function``)."""

from __future__ import annotations

from typing import Any


def paths(results: dict[str, Any]) -> dict[str, Any]:
    """The paths the backends saw, by key, and which keys answered."""
    return {"paths": {key: body["path"] for key, body in results.items()}, "keys": sorted(results)}


def broken(results: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("the aggregator's own bug")


def two_arguments(results: dict[str, Any], extra: int) -> None:
    return None


NOT_CALLABLE = 3
