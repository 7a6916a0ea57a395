"""The span exporter's background task in a real gateway process: there only when configured,
started with the gateway (after fork, in the process that serves), gone after a reload turns
export off or when the gateway drains."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import yaml

from tests.support.gateway import RunningGateway, gateway_config
from tests.support.ports import free_port

EXPORT_TASK = "otlp span export"


def _export_tasks(gw: RunningGateway) -> list[asyncio.Task[object]]:
    return list(gw.call(lambda: [t for t in asyncio.all_tasks() if t.get_name() == EXPORT_TASK]))


def test_no_export_task_unless_configured() -> None:
    gw = RunningGateway(gateway_config(free_port()))
    try:
        assert gw.gateway.spans is None
        assert all(server.observers.spans is None for server in gw.gateway.listeners.values())
        assert _export_tasks(gw) == []
    finally:
        gw.stop()


def test_export_task_runs_while_configured_and_stops_on_reload_and_drain(tmp_path: Path) -> None:
    doc = gateway_config(free_port())
    traced = {**doc, "tracing": {"otlp": {"endpoint": f"http://127.0.0.1:{free_port()}/v1/traces"}}}
    gw = RunningGateway(traced)
    try:
        [task] = _export_tasks(gw)
        exporter = gw.gateway.spans
        assert exporter is not None and exporter.task is task
        assert all(server.observers.spans is exporter for server in gw.gateway.listeners.values())

        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump({**doc, "listeners": [{"name": "main", "bind": "127.0.0.1:0"}]}))
        gw.reload(str(path))
        assert gw.gateway.spans is None and exporter.retired
        deadline = time.monotonic() + 5
        while not task.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert task.done() and _export_tasks(gw) == []
    finally:
        gw.stop()
    assert task.done()
