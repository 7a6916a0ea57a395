"""How the benchmark finds a fastgw it can run, and what it writes: without sockets.

A checkout installed by ``pip install .`` (what scripts/demo does) has no compiled extensions in
``src/``; running ``src`` there would die on import, so the bench runs the installed package, or
says exactly what to run when there is none. Only a full run replaces the figures the README
shows (``results/latest.*``).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import sys
from pathlib import Path

import pytest

import bench.run
from bench.http2 import GRPC_MESSAGE, write_grpc_message
from bench.run import (
    COMPILED,
    SCENARIOS,
    BenchError,
    fastgw_config,
    fastgw_environment,
    is_full_run,
    save_results,
    scenario_contenders,
)
from fastgw.config import load_config


def parse(monkeypatch: pytest.MonkeyPatch, *argv: str) -> argparse.Namespace:
    """The arguments ``python -m bench ARGV`` runs with (nothing runs)."""
    seen: list[argparse.Namespace] = []
    with monkeypatch.context() as patch:
        patch.setattr(bench.run, "run", lambda args: seen.append(args) or 0)
        bench.run.main(list(argv))
    return seen[0]


def test_only_a_full_run_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_full_run(parse(monkeypatch))
    assert is_full_run(parse(monkeypatch, "--rounds", "5"))
    for quick in (
        ("--rounds", "1", "--seconds", "2", "--scenarios", "small-get,latency-c1"),
        ("--scenarios", "small-get"),
        ("--contenders", "nginx,fastgw"),
        ("--rounds", "1"),
        ("--seconds", "2"),
    ):
        assert not is_full_run(parse(monkeypatch, *quick)), quick


def test_a_quick_run_leaves_the_latest_results_alone(tmp_path: Path) -> None:
    (tmp_path / "latest.json").write_text("the full run's\n")
    (tmp_path / "latest.png").write_bytes(b"the full run's chart")
    lines = save_results([{"scenario": "small-get", "rps": 1.0}], tmp_path, latest=False)
    assert (tmp_path / "latest.json").read_text() == "the full run's\n"
    assert (tmp_path / "latest.png").read_bytes() == b"the full run's chart"
    stamped = list(tmp_path.glob("2*.json"))
    assert len(stamped) == 1
    assert json.loads(stamped[0].read_text())["results"] == [{"scenario": "small-get", "rps": 1.0}]
    assert any("--latest" in line for line in lines)


def test_a_full_run_replaces_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "latest.json").write_text("old\n")
    drawn: list[Path] = []
    monkeypatch.setattr(bench.run, "draw_chart", lambda rows, path: drawn.append(path))
    save_results([{"scenario": "small-get"}], tmp_path, latest=True)
    assert json.loads((tmp_path / "latest.json").read_text())["results"] == [{"scenario": "small-get"}]
    assert drawn == [tmp_path / "latest.png"]


def python_only_checkout(root: Path) -> Path:
    """A checkout's ``src`` as after a fresh clone: the package's Python, no extension built."""
    package = root / "src" / "fastgw"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    return root / "src"


def test_src_built_in_place_runs_from_src(tmp_path: Path) -> None:
    src = python_only_checkout(tmp_path)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for name in COMPILED:
        built = src / "fastgw" / f"{name.replace('.', '/')}{suffix}"
        built.parent.mkdir(parents=True, exist_ok=True)
        built.write_bytes(b"")
    env, what = fastgw_environment(src)
    assert env["PYTHONPATH"].split(":")[0] == str(src)
    assert "built in place" in what


def test_a_checkout_without_extensions_runs_the_installed_fastgw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This interpreter has fastgw installed (the test run's own install) with its extensions.
    monkeypatch.setattr(bench.run, "REPO", tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "src"))
    env, what = fastgw_environment(python_only_checkout(tmp_path))
    assert "PYTHONPATH" not in env  # src would shadow the installed package with one that cannot load
    assert "installed" in what


def test_without_either_the_error_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An interpreter without site-packages stands for a Python that never had fastgw installed.
    bare = tmp_path / "bare-python"
    bare.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    bare.chmod(0o755)
    repo = tmp_path / "checkout"
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").write_text("")
    monkeypatch.setattr(bench.run, "REPO", repo)
    with pytest.raises(BenchError) as info:
        fastgw_environment(python_only_checkout(repo), python=str(bare))
    message = str(info.value)
    assert f"not built in {repo / 'src'}" in message and f"{bare} has no fastgw installed" in message
    assert ".venv/bin/python -m pip install -e ." in message
    assert ".venv/bin/python -m pip install ." in message
    assert "then run:  .venv/bin/python -m bench" in message


def test_a_venv_that_has_fastgw_is_named_when_another_python_runs_the_bench(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `python3 -m bench` after scripts/demo: the system Python has no fastgw, .venv has.
    bare = tmp_path / "bare-python"
    bare.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    bare.chmod(0o755)
    repo = tmp_path / "checkout"
    (repo / ".venv" / "bin").mkdir(parents=True)
    venv_python = repo / ".venv" / "bin" / "python"
    venv_python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')  # this one has fastgw
    venv_python.chmod(0o755)
    monkeypatch.setattr(bench.run, "REPO", repo)
    with pytest.raises(BenchError) as info:
        fastgw_environment(python_only_checkout(repo), python=str(bare))
    assert str(info.value) == (
        f"{bare} has no fastgw installed, .venv/bin/python has (as scripts/demo installs it): "
        "run .venv/bin/python -m bench"
    )


def test_the_h2c_upstream_scenarios(tmp_path: Path) -> None:
    """fastgw reaches the upstream's h2c port with protocol h2c (a config fastgw accepts), and
    takes h2c from h2load where it drives (gRPC); a baseline build, which may predate HTTP/2
    upstreams, is not asked to run them."""
    scenarios = [s for s in SCENARIOS if s.upstream_protocol == "h2c"]
    assert any(s.grpc and s.driver == "h2load" for s in scenarios)
    for scenario in scenarios:
        config = load_config(str(fastgw_config(tmp_path, 8080, (1, 2, 3, 4, 5), scenario)))
        (upstream,) = config.upstreams.values()
        assert upstream.protocol == "h2c" and [t.port for t in upstream.targets] == [5]
        assert config.listeners[0].http2.h2c == (scenario.driver == "h2load")
        assert "baseline" not in scenario_contenders(scenario, baseline=True)


def test_the_grpc_message_is_length_prefixed(tmp_path: Path) -> None:
    """gRPC's framing of a message (not compressed, then its length, big-endian), as h2load sends
    it and the upstream answers with it."""
    framed = write_grpc_message(tmp_path).read_bytes()
    assert framed[0] == 0 and int.from_bytes(framed[1:5], "big") == len(framed) - 5 == len(GRPC_MESSAGE)
