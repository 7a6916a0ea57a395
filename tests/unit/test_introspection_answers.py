"""How the introspection plugin reads an endpoint's answer (RFC 7662 2.2): what it means for
the token, and how long it may be cached (never past ``exp``, nor past ``max_ttl``)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from fastgw.errors import UpstreamFault
from fastgw.plugins.introspection import INACTIVE, Introspection, read_options


def plugin(**options: Any) -> Introspection:
    base = {"url": "http://idp.internal:8080/introspect", "client_id": "gw", "client_secret": "s"}
    return Introspection(read_options({**base, **options}, "plugins[0]"))


def read(answer: object, status: int = 200, **options: Any) -> tuple[Any, float]:
    return plugin(**options)._read_answer(status, orjson.dumps(answer))


def test_active_answer_is_cached_at_most_max_ttl() -> None:
    known, ttl = read({"active": True, "sub": "a", "exp": time.time() + 3600}, cache={"max_ttl": "1m"})
    assert known.active and known.consumer == "a"
    assert ttl == 60


def test_active_answer_is_cached_no_longer_than_the_token_lives() -> None:
    _, ttl = read({"active": True, "exp": time.time() + 10}, cache={"max_ttl": "1h"})
    assert 0 < ttl <= 10


def test_without_exp_max_ttl_bounds_it() -> None:
    assert read({"active": True})[1] == 60  # the default


@pytest.mark.parametrize(
    "answer",
    [
        {"active": False, "sub": "a"},
        {"active": True, "exp": time.time() - 1},  # expired, whatever the endpoint says
        {"active": True, "nbf": time.time() + 600},  # not valid yet
    ],
)
def test_inactive_answers_are_cached_negative_ttl(answer: dict[str, Any]) -> None:
    assert read(answer, cache={"negative_ttl": "2s"}) == (INACTIVE, 2)


def test_scope_and_consumer() -> None:
    known, _ = read({"active": True, "client_id": "job", "scope": "a:read  b:write"})
    assert known.scopes == {"a:read", "b:write"}
    assert known.consumer == "job"


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (500, b"{}", "answered 500"),
        (200, b"<html>", "answered without a boolean 'active' in a JSON object"),
        (200, b"[true]", "answered without a boolean 'active' in a JSON object"),
        (200, b'{"active": "true"}', "answered without a boolean 'active' in a JSON object"),
    ],
)
def test_unusable_answers_are_the_endpoints_failure(status: int, body: bytes, error: str) -> None:
    with pytest.raises(UpstreamFault) as fault:
        plugin()._read_answer(status, body)
    assert fault.value.status == 502
    assert fault.value.message == f"introspection endpoint {error}"  # the body names no host
    assert fault.value.detail == "idp.internal:8080"  # the log does
