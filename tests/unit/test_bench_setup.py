"""How the benchmark finds a fastgw it can run, what it runs and what it writes: without sockets.

A checkout installed by ``pip install .`` (what scripts/demo does) has no compiled extensions in
``src/``; running ``src`` there would die on import, so the bench runs the installed package, or
says exactly what to run when there is none. Only a full run replaces the figures the README
shows (``results/latest.*``). Each feature scenario gives fastgw a config it accepts and nginx
the same feature where nginx has it (``bench/features.py``); ``--workers`` reaches both.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

import bench.report
import bench.run
from bench.features import NGINX_LACKS, NGINX_LOG_FORMAT
from bench.http2 import GRPC_MESSAGE, write_grpc_message
from bench.report import Result
from bench.run import (
    COMPILED,
    SCENARIOS,
    BenchError,
    Scenario,
    config_refusal,
    fastgw_config,
    fastgw_environment,
    is_full_run,
    nginx_config,
    save_results,
    scenario_contenders,
    with_ratios,
)
from bench.tail import DriverError, parse_driver
from fastgw.config import load_config, parse_config
from fastgw.config.schema import ACCESS_LOG_FIELDS, PoolConfig
from fastgw.plan import compile_plan

REPO_SRC = bench.run.REPO / "src"


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
    monkeypatch.setattr(bench.report, "draw_chart", lambda rows, path: drawn.append(path))
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
    takes h2c from h2load where it drives (gRPC); a baseline build runs them too, unless its own
    ``fastgw check`` refuses their configuration (a build from before HTTP/2 upstreams): then
    the A/B skips it there and says why, in the check's words."""
    scenarios = [s for s in SCENARIOS if s.upstream_protocol == "h2c"]
    assert any(s.grpc and s.driver == "h2load" for s in scenarios)
    for scenario in scenarios:
        conf = fastgw_config(tmp_path, 8080, (1, 2, 3, 4, 5), scenario)
        config = load_config(str(conf))
        (upstream,) = config.upstreams.values()
        assert upstream.protocol == "h2c" and [t.port for t in upstream.targets] == [5]
        assert config.listeners[0].http2.h2c == (scenario.driver == "h2load")
        assert "baseline" in scenario_contenders(scenario, baseline=True)
    assert config_refusal(REPO_SRC, conf) is None
    older = tmp_path / "older.yaml"  # what a build without the h2c protocol makes of it
    older.write_text(conf.read_text().replace("protocol: h2c", "protocol: h3"))
    refusal = config_refusal(REPO_SRC, older)
    assert refusal is not None and "protocol" in refusal and "h3" in refusal


def test_the_grpc_message_is_length_prefixed(tmp_path: Path) -> None:
    """gRPC's framing of a message (not compressed, then its length, big-endian), as h2load sends
    it and the upstream answers with it."""
    framed = write_grpc_message(tmp_path).read_bytes()
    assert framed[0] == 0 and int.from_bytes(framed[1:5], "big") == len(framed) - 5 == len(GRPC_MESSAGE)


# -- fair contenders: each scenario's features, in fastgw and in nginx ------------------------------
FEATURE_SCENARIOS = [s for s in SCENARIOS if s.features]
UPSTREAMS = (9001, 9002, 9003, 9004, 9005)


@pytest.mark.parametrize("scenario", FEATURE_SCENARIOS, ids=lambda s: s.name)
def test_fastgw_accepts_every_feature_scenario_s_config(tmp_path: Path, scenario: Scenario) -> None:
    config = parse_config(
        yaml.safe_load(fastgw_config(tmp_path, 8080, UPSTREAMS, scenario).read_text()), "b.yaml"
    )
    compile_plan(config)
    (route,) = config.routes
    names = [plugin.name for plugin in route.plugins]
    assert ("access_log" in scenario.features) == (config.access_log is not None)
    assert names == [
        n for n in ("jwt", "rate_limit", "cache") if any(f.startswith(n) for f in scenario.features)
    ]


def test_production_is_everything_an_edge_runs_at_once(tmp_path: Path) -> None:
    production = next(s for s in SCENARIOS if s.name == "production")
    config = parse_config(
        yaml.safe_load(fastgw_config(tmp_path, 8080, UPSTREAMS, production).read_text()), "b.yaml"
    )
    (route,) = config.routes
    assert [p.name for p in route.plugins] == [
        "jwt",
        "rate_limit",
    ]  # the token first: its consumer keys the limit
    assert route.plugins[1].options["key"] == "consumer"
    assert config.access_log is not None and config.admin is not None  # the log; metrics served
    assert config.listeners[0].trace_context and config.listeners[0].request_id_header == "X-Request-Id"
    nginx = nginx_config(tmp_path, 8080, UPSTREAMS, production).read_text()
    for equivalent in (
        "log_format fastgw_json escape=json",
        f"access_log {tmp_path / 'nginx-access.log'} fastgw_json buffer=64k flush=1s;",
        "limit_req_zone $http_authorization zone=bench",  # the token stands for the consumer
        "limit_req zone=bench",
        "proxy_set_header X-Request-Id $request_id;",
        'proxy_set_header traceparent "00-$request_id-$bench_span_id-01";',
    ):
        assert equivalent in nginx
    assert nginx.count("map $request_id $bench_span_id") == 1  # once, though two features use it


@pytest.mark.parametrize(
    ("name", "equivalent"),
    [
        ("access-log", "fastgw_json buffer=64k flush=1s;"),
        ("rate-limit", "limit_req_zone $binary_remote_addr zone=bench"),
        ("jwt+ratelimit", "limit_req zone=bench burst=1000000 nodelay;"),
        ("cached", "proxy_cache bench;"),
    ],
)
def test_nginx_gets_the_feature_where_it_has_it(tmp_path: Path, name: str, equivalent: str) -> None:
    scenario = next(s for s in SCENARIOS if s.name == name)
    nginx = nginx_config(tmp_path, 8080, UPSTREAMS, scenario).read_text()
    assert equivalent in nginx and "@" not in nginx.replace("@DIR@", "")
    plain = nginx_config(
        tmp_path, 8080, UPSTREAMS, next(s for s in SCENARIOS if s.name == "small-get")
    ).read_text()
    assert "limit_req" not in plain and "fastgw_json" not in plain and "proxy_cache" not in plain
    assert "worker_processes 1;" in plain


def test_nginx_s_access_log_line_has_fastgw_s_fields_in_its_order() -> None:
    assert tuple(re.findall(r'"(\w+)":', NGINX_LOG_FORMAT)) == ACCESS_LOG_FIELDS


def test_what_nginx_lacks_is_said_beside_its_figures() -> None:
    rows = with_ratios(
        [
            Result("production", "nginx", 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0),
            Result("production", "fastgw", 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0),
            Result("access-log", "nginx", 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0),
        ]
    )
    assert rows[0]["nginx_lacks"] == [NGINX_LACKS["jwt"]]
    assert "nginx_lacks" not in rows[1] and "nginx_lacks" not in rows[2]


def test_workers_run_fastgw_and_nginx_with_that_many_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert parse(monkeypatch).workers == 1
    assert parse(monkeypatch, "--workers", "2").workers == 2
    two = Scenario("small-get-w2", "/items/1", workers=2)
    assert "worker_processes 2;" in nginx_config(tmp_path, 8080, UPSTREAMS, two).read_text()
    started: list[list[str]] = []
    monkeypatch.setattr(bench.run, "process", lambda argv, *rest: started.append(argv))
    bench.run.start_fastgw(tmp_path, 8080, UPSTREAMS, two)
    assert started[0][-2:] == ["--workers", "2"]


def test_the_bench_keeps_fastgw_s_default_upstream_pool(tmp_path: Path) -> None:
    """c1000 measures the pool users get (its churn counted from the upstream's accepts)."""
    c1000 = next(s for s in SCENARIOS if s.name == "c1000")
    config = parse_config(
        yaml.safe_load(fastgw_config(tmp_path, 8080, UPSTREAMS, c1000).read_text()), "b.yaml"
    )
    assert config.upstreams["up"].pool == PoolConfig()
    assert PoolConfig().max_idle == PoolConfig().max_connections >= c1000.connections


# -- tail latency: the constant-rate driver's report ------------------------------------------------
def test_the_rate_driver_s_line_becomes_figures_with_the_late_as_errors() -> None:
    line = "requests 9000 late 12 errors 3 rate 4500.0 p50 410 p90 800 p99 2500 p999 9100 max 12000\n"
    assert parse_driver(line) == {
        "requests": 9000,
        "rps": 4500.0,
        "p50": 0.41,
        "p99": 2.5,
        "p999": 9.1,
        "errors": 15,
    }
    with pytest.raises(DriverError, match="lacks"):
        parse_driver("rate_driver: connect: Connection refused\n")


def test_a_full_run_has_the_tail_group(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "tail" in parse(monkeypatch).scenarios.split(",")
    assert not is_full_run(
        parse(monkeypatch, "--scenarios", ",".join(s.name for s in SCENARIOS) + ",idle,idle-ws")
    )
