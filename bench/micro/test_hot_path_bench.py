"""pytest-benchmark of the gateway's own per-request cost (see bench/hot_path.py)."""

from __future__ import annotations

from typing import Any

from bench.hot_path import make_round


def test_proxied_request_python_cost(benchmark: Any) -> None:
    one_request = make_round()
    benchmark(one_request)
