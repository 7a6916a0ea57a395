"""Shared fixtures: a real upstream process, and the gateway running in-process."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.certs import Pki
from tests.support.gateway import RunningGateway, gateway_config
from tests.support.ports import free_port
from tests.support.procs import Proc, start_process

UPSTREAM_SCRIPT = str(Path(__file__).parent / "support" / "upstream_server.py")


def start_upstream(*extra: str) -> tuple[Proc, int]:
    port = free_port()
    proc = start_process(
        [sys.executable, UPSTREAM_SCRIPT, "--port", str(port), *extra], ready_line="listening"
    )
    return proc, port


@pytest.fixture(scope="session")
def upstream() -> Iterator[int]:
    """Port of a long-lived real upstream server (see tests/support/upstream_server.py)."""
    proc, port = start_upstream()
    yield port
    proc.stop()


@pytest.fixture(params=["uvloop", "asyncio"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_gateway(loop_kind: str) -> Iterator[Callable[..., RunningGateway]]:
    """Factory: ``make_gateway(document)`` starts a gateway; all are stopped after the test."""
    running: list[RunningGateway] = []

    def make(document: dict[str, Any]) -> RunningGateway:
        gw = RunningGateway(document, loop_kind)
        running.append(gw)
        return gw

    yield make
    for gw in running:
        gw.stop()


@pytest.fixture
def gateway(make_gateway: Callable[..., RunningGateway], upstream: int) -> RunningGateway:
    """A gateway with one catch-all route to the shared upstream."""
    return make_gateway(gateway_config(upstream))


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Test CAs (server, client, unrelated) and the certificates issued from them, as files."""
    return Pki(tmp_path_factory.mktemp("pki"))
