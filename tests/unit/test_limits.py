"""``fastgw.http.limits``: the Host value's check, and the one copy of each value kept for all the
connections that send it."""

from __future__ import annotations

import pytest

from fastgw.errors import ClientFault
from fastgw.http import limits


@pytest.mark.parametrize(
    ("value", "host"),
    [
        (b"example.com", b"example.com"),
        (b"Example.COM:8080", b"example.com"),
        (b"[::1]:443", b"[::1]"),
        (b"10.0.0.1", b"10.0.0.1"),
    ],
)
def test_a_host_value_gives_its_routing_form(value: bytes, host: bytes) -> None:
    assert limits.check_host(value) == host
    assert limits.host_entry(value) == (value, host)


@pytest.mark.parametrize("value", [b"", b"exa mple.com", b"example.com:80:80", b"a/b", b"[::1"])
def test_an_invalid_host_value_is_a_400(value: bytes) -> None:
    with pytest.raises(ClientFault, match="invalid Host header") as raised:
        limits.host_entry(value)
    assert raised.value.status == 400


def test_equal_host_values_give_one_kept_object() -> None:
    """Each connection keeps the Host value its client sent last (to compare the next one with):
    the copy kept here, so connections naming the same host hold one object between them."""
    first = limits.host_entry(bytes(bytearray(b"shop.example:8443")))
    again = limits.host_entry(bytes(bytearray(b"shop.example:8443")))
    assert again[0] is first[0] and again[1] is first[1]
    assert first == (b"shop.example:8443", b"shop.example")
