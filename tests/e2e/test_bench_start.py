"""The benchmark starting fastgw as ``python -m bench`` does, for real: from a checkout whose
``src`` has no compiled extensions (a ``pip install .`` checkout) it runs the installed package,
and a gateway that does not start is reported at once with its log, which lives in a temporary
directory deleted at the end of the run."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

import bench.run
from bench.run import BenchError, Scenario, fastgw_environment, process, start_fastgw
from tests.e2e.conftest import Upstream
from tests.support.ports import free_port
from tests.support.rawhttp import build_request, connect, read_response

SRC = Path(__file__).resolve().parents[2] / "src"


def test_a_checkout_without_built_extensions_benchmarks_the_installed_fastgw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream_proc: Upstream
) -> None:
    # The checkout as after `git clone` + `pip install .`: src/fastgw has its Python only.
    checkout = tmp_path / "checkout"
    shutil.copytree(SRC, checkout / "src", ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    monkeypatch.setattr(bench.run, "REPO", checkout)
    workdir = tmp_path / "work"
    workdir.mkdir()
    port = free_port()
    scenario = Scenario("small-get", "/echo/1")
    with (
        start_fastgw(workdir, port, (upstream_proc.port,), scenario, src=checkout / "src"),
        connect(port) as sock,
    ):
        sock.sendall(build_request("GET", "/echo/1"))
        assert read_response(sock).status == 200


def test_a_gateway_that_does_not_start_is_reported_at_once_with_its_log(tmp_path: Path) -> None:
    config = tmp_path / "fastgw-bad.yaml"
    config.write_text("listeners: [{bind: '127.0.0.1:1'}]\nupstreams: {}\nroutes: []\n")
    env, _ = fastgw_environment(SRC)
    with (
        pytest.raises(BenchError) as info,
        process([sys.executable, "-m", "fastgw.cli", "run", "-c", str(config)], free_port(), tmp_path, env),
    ):
        pass
    message = str(info.value)
    assert "exited with status 2 before listening" in message  # seen exiting, not timed out
    assert "fastgw: invalid configuration:" in message  # the gateway's own words, from its log
