"""``fastgw import ocelot`` and ``fastgw run | check | routes -c ocelot.json`` as an operator runs
them: the report, the YAML that passes ``fastgw check``, a gateway serving straight from an Ocelot
file in front of a real upstream, and one-line errors (exit 2) for what cannot be translated."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import yaml

from tests.e2e.conftest import Upstream, _wait_listening, cli_env, fastgw_argv, run_cli, wait_for
from tests.support.ocelot_files import DATA, retarget
from tests.support.procs import ProcessReaper
from tests.support.rawhttp import RawResponse, build_request, connect, read_response


def test_import_writes_yaml_that_passes_check_and_prints_the_report(tmp_path: Path) -> None:
    output = tmp_path / "gateway.yaml"
    result = run_cli("import", "ocelot", str(DATA / "reroutes-legacy.json"), "-o", str(output))
    assert result.code == 0, result.stderr
    assert result.stdout.startswith(f"Ocelot configuration: {DATA / 'reroutes-legacy.json'}\n")
    assert "  read as: ReRoutes (Ocelot before 16.0)" in result.stdout
    assert "  approximated   RateLimitOptions: 2 requests per 1m" in result.stdout
    assert result.stdout.endswith(f"\nwrote {output}\n")
    check = run_cli("check", "-c", str(output))
    assert check.code == 0 and check.stdout.startswith(f"{output}: OK"), check.stderr


def test_import_of_a_folder_writes_yaml_to_stdout_and_the_report_to_stderr(tmp_path: Path) -> None:
    result = run_cli("import", "ocelot", str(DATA / "merged"), "--bind", "127.0.0.1:8088")
    assert result.code == 0, result.stderr
    document = yaml.safe_load(result.stdout)
    assert document["listeners"] == [{"name": "public", "bind": "127.0.0.1:8088"}]
    assert "files merged as Ocelot merges ocelot.*.json" in result.stderr
    assert "ocelot.Development.json" not in result.stderr  # skipped, as Ocelot skips it
    assert (
        "Development"
        in run_cli("import", "ocelot", str(DATA / "merged"), "--environment", "Production").stderr
    )


def ocelot_file(tmp_path: Path, source: str, upstream: int) -> Path:
    """The data file pointed at the upstream, as ocelot.json (comments and all)."""
    text = retarget((DATA / source).read_text(encoding="utf-8-sig"), {51001: upstream, 51002: upstream})
    path = tmp_path / "ocelot.json"
    path.write_text(text, encoding="utf-8")
    return path


def get(port: int, target: str) -> RawResponse:
    with connect(port) as sock:
        sock.sendall(build_request("GET", target))
        return read_response(sock)


def test_run_serves_an_ocelot_file_directly(
    tmp_path: Path, procs: ProcessReaper, upstream_proc: Upstream
) -> None:
    path = ocelot_file(tmp_path, "basic.json", upstream_proc.port)
    path.write_text(path.read_text().replace('"http://localhost:5555"', '"http://127.0.0.1:0"'))
    proc = procs.start(fastgw_argv("run", "-c", str(path)), env=cli_env(), timeout=15)
    port = _wait_listening(proc, 1, 15)
    response = get(port, "/ocelot/posts/42")
    assert response.status == 200 and response.json()["path"] == "/echo/todos/42"
    log = proc.stderr()
    assert f"Ocelot configuration {path} translated: " in log
    assert "RouteIsCaseSensitive: approximated: absent (false)" in log  # each difference is logged
    # a reload reads the Ocelot file again
    path.write_text(path.read_text().replace('"/ocelot/posts/{id}"', '"/ocelot/todos/{id}"'))
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in proc.stderr(), 10, "the reload")
    assert get(port, "/ocelot/todos/42").json()["path"] == "/echo/todos/42"
    assert get(port, "/ocelot/posts/42").status == 404


def test_check_and_routes_read_an_ocelot_file(tmp_path: Path) -> None:
    path = ocelot_file(tmp_path, "routing.json", 9)
    check = run_cli("check", "-c", str(path))
    assert check.code == 0 and check.stdout.startswith(f"{path}: OK"), check.stderr
    assert "upstreams: localhost-9 (1 targets)" in check.stdout
    table = run_cli("routes", "-c", str(path))
    assert table.code == 0
    assert "goods-delete" in table.stdout and "orders-delete" not in table.stdout  # never reached in Ocelot
    found = run_cli("routes", "-c", str(path), "--match", "GET http://test.local/goods/delete")
    assert found.code == 0 and "goods-delete" in found.stdout


def test_what_cannot_be_translated_is_a_one_line_error(tmp_path: Path) -> None:
    broken = tmp_path / "ocelot.json"
    broken.write_text(
        '{\n  // a comment\n  "Routes": [ { "UpstreamPathTemplate": "/a", "Priority": oops } ]\n}'
    )
    for args in (("import", "ocelot", str(broken)), ("check", "-c", str(broken))):
        result = run_cli(*args)
        assert result.code == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            f"fastgw: invalid configuration: {broken}: invalid JSON at line 3, column 59:"
            " unexpected character, expected a JSON value"
        )
    only_ws = tmp_path / "ws" / "ocelot.json"
    only_ws.parent.mkdir()
    route = {"UpstreamPathTemplate": "/a", "DownstreamPathTemplate": "/a", "DownstreamScheme": "ws",
             "UpstreamHttpMethod": ["Post"],  # a WebSocket route no handshake (a GET) can reach
             "DownstreamHostAndPorts": [{"Host": "example.com", "Port": 80}]}  # fmt: skip
    only_ws.write_text(json.dumps({"Routes": [route]}))
    for args in (("import", "ocelot", str(only_ws)), ("run", "-c", str(only_ws))):
        result = run_cli(*args)
        assert result.code == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            f"fastgw: invalid configuration: {only_ws}: Routes: no route could be translated"
            " (see the report for each route's reason)"
        )
        assert "UpstreamHttpMethod" in result.stderr and "a WebSocket handshake is a GET" in result.stderr
