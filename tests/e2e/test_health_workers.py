"""Active health checks through ``fastgw run --workers 2``: each worker process probes on its own
schedule (once per process, never in the supervisor), a SIGHUP reload of an unchanged upstream
keeps the checkers going, and SIGTERM stops them with the workers."""

from __future__ import annotations

import signal
import time

from tests.e2e.conftest import RunGateway, Upstream, gateway_doc, wait_for

INTERVAL = 0.1
WINDOW = 2.0
ROUNDS = WINDOW / INTERVAL  # what one process does in the window


def probes_in_window(upstream: Upstream) -> int:
    before = upstream.get_json("/health/checks")["checks"]
    time.sleep(WINDOW)
    return int(upstream.get_json("/health/checks")["checks"] - before)


def test_each_worker_checks_once_per_interval_across_a_reload_until_it_stops(
    run_gateway: RunGateway, upstream_proc: Upstream
) -> None:
    doc = gateway_doc(upstream_proc.port, upstream={"health": {"path": "/health", "interval": INTERVAL}})
    gw = run_gateway(doc, workers=2)
    # Two processes probe: about twice one process's rounds (never three: not the supervisor).
    assert 1.3 * ROUNDS < probes_in_window(upstream_proc) <= 2 * ROUNDS + 4

    gw.config_path.write_text(gw.config_path.read_text().replace("/{*rest}", "/{*path}"))
    gw.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: gw.proc.stderr().count("configuration reloaded") >= 2, 5, "both workers to reload")
    assert 1.3 * ROUNDS < probes_in_window(upstream_proc) <= 2 * ROUNDS + 4

    gw.proc.send_signal(signal.SIGTERM)
    assert gw.wait_exit(10) == 0
    stopped_at = upstream_proc.get_json("/health/checks")["checks"]
    time.sleep(3 * INTERVAL)
    assert upstream_proc.get_json("/health/checks")["checks"] == stopped_at
