"""Counters plugins declare at compile time and bump per request; rendered with the metrics.

A plugin declares its counters once, in ``compile``, and keeps the child it will bump::

    REJECTED = declare_counter("fastgw_ratelimit_rejected_total", "Requests refused by rate limits.",
                               ("route",))
    ...
    self.rejected = REJECTED.labels(route_id)   # in compile
    self.rejected.inc()                          # per request: one attribute add, no lookup

Declaring is idempotent (a reload that compiles the plugin again gets the same family and the
counts run on); declaring one name twice with other labels is a programming error. The registry
is per process; with ``--workers N`` the supervisor sums every worker's values on scrape.
Suggested names: ``fastgw_auth_rejected_total``, ``fastgw_ratelimit_rejected_total``,
``fastgw_cache_requests_total{route,result="hit|miss|stale"}``.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


class Counter:
    """One labelled counter: a plain integer, bumped from the worker's event loop only."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class CounterFamily:
    """A named counter and its children, one per combination of label values."""

    __slots__ = ("children", "help", "label_names", "name")

    def __init__(self, name: str, help: str, label_names: tuple[str, ...]) -> None:
        self.name = name
        self.help = help
        self.label_names = label_names
        self.children: dict[tuple[str, ...], Counter] = {}

    def labels(self, *values: str) -> Counter:
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name} has labels {self.label_names}, got {len(values)} values")
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = Counter()
        return child


class CounterRegistry:
    def __init__(self) -> None:
        self.families: dict[str, CounterFamily] = {}

    def declare(self, name: str, help: str, label_names: tuple[str, ...] = ()) -> CounterFamily:
        if not _NAME.fullmatch(name) or not name.endswith("_total"):
            raise ValueError(f"counter name {name!r}: expected [a-zA-Z_:][a-zA-Z0-9_:]* ending in _total")
        family = self.families.get(name)
        if family is None:
            family = self.families[name] = CounterFamily(name, help, tuple(label_names))
        elif family.label_names != tuple(label_names):
            raise ValueError(f"counter {name} already declared with labels {family.label_names}")
        return family


COUNTERS = CounterRegistry()


def declare_counter(name: str, help: str, label_names: tuple[str, ...] = ()) -> CounterFamily:
    """Declare (or find again) a counter family in the process's registry."""
    return COUNTERS.declare(name, help, label_names)
