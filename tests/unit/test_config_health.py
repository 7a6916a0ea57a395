"""Config of upstream health: ``health`` (active checks) and ``outlier`` (passive ejection), their
defaults and each error as the exact ``file: key.path: message`` text."""

from __future__ import annotations

import pytest

from fastgw.config.schema import HealthCheckConfig, OutlierConfig
from tests.support.config_docs import SOURCE, error_of, parse, with_value

UP = "upstreams.catalog"
_DURATION = "expected a duration like 30, '250ms', '1.5s', '2m' or '1h'"
_STATUS = "expected a status from 100 to 599, a class like '2xx' or a range like '200-299'"


def test_neither_by_default() -> None:
    upstream = parse(with_value(f"{UP}.targets", ["127.0.0.1:1"])).upstreams["catalog"]
    assert upstream.health is None and upstream.outlier is None


def test_health_defaults() -> None:
    upstream = parse(with_value(f"{UP}.health", {"path": "/healthz"})).upstreams["catalog"]
    assert upstream.health == HealthCheckConfig(
        path="/healthz", interval=5.0, timeout=2.0, healthy_after=2, unhealthy_after=3, statuses=((200, 399),)
    )


def test_health_fields() -> None:
    health = {
        "path": "/ready?deep=1",
        "interval": "200ms",
        "timeout": "0.1",
        "healthy_after": 1,
        "unhealthy_after": "4",
        "statuses": [200, "3xx", "401-403"],
    }
    assert parse(with_value(f"{UP}.health", health)).upstreams["catalog"].health == HealthCheckConfig(
        path="/ready?deep=1",
        interval=0.2,
        timeout=0.1,
        healthy_after=1,
        unhealthy_after=4,
        statuses=((200, 200), (300, 399), (401, 403)),
    )


@pytest.mark.parametrize(
    ("value", "ranges"), [(204, ((204, 204),)), ("2xx", ((200, 299),)), ("${CODE}", ((418, 418),))]
)
def test_a_single_status_needs_no_list(value: object, ranges: tuple[tuple[int, int], ...]) -> None:
    doc = with_value(f"{UP}.health", {"path": "/h", "statuses": value})
    health = parse(doc, env={"CODE": "418"}).upstreams["catalog"].health
    assert health is not None and health.statuses == ranges


def test_a_default_timeout_shrinks_to_a_short_interval() -> None:
    health = parse(with_value(f"{UP}.health", {"path": "/h", "interval": "1s"})).upstreams["catalog"].health
    assert health is not None and health.timeout == 1.0


def test_outlier_defaults() -> None:
    upstream = parse(with_value(f"{UP}.outlier", {})).upstreams["catalog"]
    assert upstream.outlier == OutlierConfig(
        consecutive_failures=5, count_5xx=True, base_ejection=30.0, max_ejection=300.0, max_ejected_percent=50
    )


def test_outlier_fields() -> None:
    outlier = {
        "consecutive_failures": 2,
        "count_5xx": "false",
        "base_ejection": "100ms",
        "max_ejection": "2s",
        "max_ejected_percent": 100,
    }
    assert parse(with_value(f"{UP}.outlier", outlier)).upstreams["catalog"].outlier == OutlierConfig(
        consecutive_failures=2, count_5xx=False, base_ejection=0.1, max_ejection=2.0, max_ejected_percent=100
    )


def test_a_default_max_ejection_grows_to_a_long_base() -> None:
    outlier = parse(with_value(f"{UP}.outlier", {"base_ejection": "10m"})).upstreams["catalog"].outlier
    assert outlier is not None and outlier.max_ejection == 600.0


_ERRORS: list[tuple[str, object, str]] = [
    (f"{UP}.health", "/healthz", f"{UP}.health: expected a mapping, found '/healthz'"),
    (f"{UP}.health", {}, f"{UP}.health: missing required key 'path'"),
    (
        f"{UP}.health",
        {"path": "/h", "intervall": 1},
        f"{UP}.health: unknown key 'intervall'; expected one of: path, interval, timeout, healthy_after,"
        " unhealthy_after, statuses; did you mean 'interval'?",
    ),
    *(
        (
            f"{UP}.health.path",
            bad,
            f"{UP}.health.path: expected a path starting with '/' (a query is allowed) without spaces"
            f" or '#', found {shown}",
        )
        for bad, shown in [("healthz", "'healthz'"), ("/a b", "'/a b'"), ("/a#b", "'/a#b'"), (5, "5")]
    ),
    (f"{UP}.health.interval", "often", f"{UP}.health.interval: {_DURATION}, found 'often'"),
    (f"{UP}.health.interval", 0, f"{UP}.health.interval: expected a duration greater than 0, found 0"),
    (
        f"{UP}.health.timeout",
        "6s",
        f"{UP}.health.timeout: expected at most interval (5s), found '6s'",
    ),
    (
        f"{UP}.health.healthy_after",
        0,
        f"{UP}.health.healthy_after: expected an integer from 1 to 100, found 0",
    ),
    (
        f"{UP}.health.unhealthy_after",
        True,
        f"{UP}.health.unhealthy_after: expected an integer from 1 to 100, found true",
    ),
    (
        f"{UP}.health.statuses",
        "6xx",
        f"{UP}.health.statuses: {_STATUS}, or a non-empty list of these, found '6xx'",
    ),
    (f"{UP}.health.statuses", [], f"{UP}.health.statuses: expected a non-empty list, found an empty list"),
    (f"{UP}.health.statuses", [200, 99], f"{UP}.health.statuses[1]: {_STATUS}, found 99"),
    (f"{UP}.health.statuses", ["300-200"], f"{UP}.health.statuses[0]: {_STATUS}, found '300-200'"),
    (f"{UP}.health.statuses", ["200-600"], f"{UP}.health.statuses[0]: {_STATUS}, found '200-600'"),
    (f"{UP}.outlier", [], f"{UP}.outlier: expected a mapping, found an empty list"),
    (
        f"{UP}.outlier",
        {"consecutive_errors": 3},
        f"{UP}.outlier: unknown key 'consecutive_errors'; expected one of: consecutive_failures,"
        " count_5xx, base_ejection, max_ejection, max_ejected_percent; did you mean"
        " 'consecutive_failures'?",
    ),
    (
        f"{UP}.outlier.consecutive_failures",
        0,
        f"{UP}.outlier.consecutive_failures: expected an integer from 1 to 1000, found 0",
    ),
    (f"{UP}.outlier.count_5xx", "yes", f"{UP}.outlier.count_5xx: expected true or false, found 'yes'"),
    (f"{UP}.outlier.base_ejection", "-1s", f"{UP}.outlier.base_ejection: {_DURATION}, found '-1s'"),
    (
        f"{UP}.outlier.max_ejection",
        "10s",
        f"{UP}.outlier.max_ejection: expected at least base_ejection (30s), found '10s'",
    ),
    (
        f"{UP}.outlier.max_ejected_percent",
        0,
        f"{UP}.outlier.max_ejected_percent: expected an integer from 1 to 100, found 0",
    ),
]


@pytest.mark.parametrize(("path", "value", "message"), _ERRORS)
def test_errors(path: str, value: object, message: str) -> None:
    doc = with_value(path, value)
    if path.startswith(f"{UP}.health.") and path != f"{UP}.health.path":
        doc["upstreams"]["catalog"]["health"].setdefault("path", "/h")
    assert error_of(doc) == f"{SOURCE}: {message}"
