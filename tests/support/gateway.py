"""Run the real gateway in-process, on its own event loop in a thread, for integration tests.

The test thread talks to it over real loopback sockets (raw bytes, urllib, http.client), exactly
as a client would; the loop kind (uvloop or plain asyncio) is chosen per test.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from typing import Any

import uvloop

from fastgw.config import parse_config
from fastgw.errors import ConfigError
from fastgw.plan import compile_plan
from fastgw.reload import FileReloader
from fastgw.server.gateway import Gateway


def gateway_config(
    upstream_port: int, routes: list[dict[str, Any]] | None = None, **listener: Any
) -> dict[str, Any]:
    """A config document with one listener on an ephemeral port and one upstream ``up``."""
    return {
        "listeners": [{"name": "main", "bind": "127.0.0.1:0", **listener}],
        "upstreams": {"up": {"targets": [f"127.0.0.1:{upstream_port}"]}},
        "routes": routes if routes is not None else [{"id": "all", "path": "/{*rest}", "upstream": "up"}],
    }


def plugin_config_error(name: str, options: dict[str, Any]) -> str:
    """The ConfigError (as text) of compiling one route with the plugin ``name`` and ``options``."""
    route = {"id": "r", "path": "/{*rest}", "upstream": "up", "plugins": [{"name": name, **options}]}
    try:
        compile_plan(parse_config(gateway_config(9, routes=[route]), "gw.yaml"))
    except ConfigError as exc:
        return str(exc)
    raise AssertionError(f"plugin {name!r} accepted {options!r}")


class RunningGateway:
    def __init__(self, document: dict[str, Any], loop_kind: str = "uvloop") -> None:
        self.document = copy.deepcopy(document)
        self.plan = compile_plan(parse_config(self.document, "test.yaml"))
        self.gateway = Gateway(self.plan)
        self.loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self.thread.start()
        if not self._started.wait(10):
            raise RuntimeError("gateway did not start")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.gateway.start())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self.loop.run_forever()

    @property
    def port(self) -> int:
        return self.port_of("main")

    def port_of(self, listener: str) -> int:
        return self.gateway.listeners[listener].addresses[0][1]

    def call(self, fn: Any, *args: Any) -> Any:
        """Run a plain function on the gateway's loop and return its result (or raise its error)."""
        done = threading.Event()
        box: list[Any] = []
        failed: list[BaseException] = []

        def run() -> None:
            try:
                box.append(fn(*args))
            except BaseException as exc:  # raised again in the test thread
                failed.append(exc)
            finally:
                done.set()

        self.loop.call_soon_threadsafe(run)
        if not done.wait(10):
            raise TimeoutError(f"{fn!r} did not run on the gateway's loop within 10 s")
        if failed:
            raise failed[0]
        return box[0]

    def reload(self, path: str) -> None:
        """Reload from the file at ``path`` as SIGHUP would (raises its ConfigError)."""
        self.call(self.gateway.reload, FileReloader(path), "signal")

    def connection_count(self) -> int:
        return int(self.call(lambda: sum(len(s.connections) for s in self.gateway.listeners.values())))

    def stop(self, drain: float = 2.0) -> None:
        if self.loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self.gateway.drain(drain), self.loop)
        future.result(drain + 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def live_objects(gw: RunningGateway, type_name: str) -> int:
    """How many objects of a type (by class name: ``ClientProtocol``, ``UpstreamConnection``)
    are alive in the process, counted on the gateway's loop after a full collection."""
    import gc

    def count() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o).__name__ == type_name)

    return int(gw.call(count))
