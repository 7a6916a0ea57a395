"""Fixtures shared by the integration tests that need more than tests/conftest.py gives."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.etcd_server import EtcdServer


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    """A real etcd (tests/support/etcd_server.py), one per test module."""
    server = EtcdServer().start()
    yield server
    server.stop()
