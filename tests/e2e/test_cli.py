"""``fastgw check | routes | run | demo`` as an operator runs them: exit codes and output.

Exit codes: 0 success; 1 ``routes --match`` found no route (or ``run`` could not start serving);
2 invalid configuration or usage. A configuration error is one line on stderr,
``fastgw: invalid configuration: FILE: key.path: message``, and never a traceback.
"""

from __future__ import annotations

import re
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    CliResult,
    RunGateway,
    Upstream,
    _wait_listening,
    cli_env,
    fastgw_argv,
    gateway_doc,
    run_cli,
    write_config,
)
from tests.support.etcd_server import EtcdServer
from tests.support.ports import free_port
from tests.support.procs import ProcessReaper
from tests.support.rawhttp import build_request, connect, read_response

HEAD = """\
listeners:
  - name: main
    bind: "127.0.0.1:{port}"
upstreams:
  up:
    targets: ["127.0.0.1:9"]
  other:
    targets: ["127.0.0.1:10", "127.0.0.1:11"]
"""

GOOD_ROUTES = """\
routes:
  - id: item
    path: "/api/items/{id:int}"
    upstream: up
    methods: [GET]
    rewrite: "/items/{id}"
  - id: files
    path: "/files/{*rest}"
    upstream: other
    strip_prefix: "/files"
  - id: orders
    path: "/orders"
    upstream: up
    methods: [POST]
"""


def config_text(routes: str = GOOD_ROUTES, port: int = 18080) -> str:
    return HEAD.format(port=port) + routes


def write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> Path:
    return write_config(tmp_path, textwrap.dedent(text), name)


def assert_config_error(result: CliResult, path: Path, key_path: str, *fragments: str) -> str:
    """Exit 2, and stderr is the one-line ``FILE: key.path: message`` with every fragment."""
    assert result.code == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    prefix = (
        f"fastgw: invalid configuration: {path}: {key_path}: "
        if key_path
        else f"fastgw: invalid configuration: {path}: "
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("fastgw: invalid configuration:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(prefix), f"expected {prefix!r}...\ngot {lines[0]!r}"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


# -- check -----------------------------------------------------------------------------------------


def test_check_good_file_prints_a_summary(tmp_path: Path) -> None:
    path = write(tmp_path, config_text())
    result = run_cli("check", "-c", str(path))
    assert result.code == 0, result
    assert result.stderr == ""
    out = result.stdout.splitlines()
    assert out[0] == f"{path}: OK"
    assert re.search(r"listeners:\s+main \(http://127\.0\.0\.1:18080\)", result.stdout)
    assert re.search(r"upstreams:\s+up \(1 targets?\), other \(2 targets\)", result.stdout)
    assert re.search(r"routes:\s+3\b", result.stdout)


BAD_ROUTE = {
    "wrong-type": (
        config_text().replace(
            'bind: "127.0.0.1:18080"', 'bind: "127.0.0.1:18080"\n    limits: {max_headers: lots}'
        ),
        "listeners[0].limits.max_headers",
        ["expected an integer", "found 'lots'"],
    ),
    "unknown-key-suggests": (
        config_text("routes:\n  - {id: a, path: /a, upsteam: up}\n"),
        "routes[0]",
        ["unknown key 'upsteam'", "did you mean 'upstream'?"],
    ),
    "undefined-upstream": (
        config_text("routes:\n  - {id: a, path: /a, upstream: nope}\n"),
        "routes[0].upstream",
        ["expected the name of an upstream", "found 'nope'"],
    ),
    "route-conflict": (
        config_text(
            "routes:\n  - {id: a, path: '/a/{x}', upstream: up, methods: GET}\n"
            "  - {id: b, path: '/a/{y}', upstream: up, methods: [POST, GET]}\n"
        ),
        "routes[1].path",
        ["conflicts with", "'/a/{x}'"],
    ),
    "bad-template": (
        config_text("routes:\n  - {id: a, path: '/a{x}', upstream: up}\n"),
        "routes[0].path",
        ["'/a{x}'", "whole segment"],
    ),
    "unknown-constraint": (
        config_text("routes:\n  - {id: a, path: '/a/{x:nope}', upstream: up}\n"),
        "routes[0].path",
        ["unknown constraint 'nope'"],
    ),
    "unknown-plugin": (
        config_text("routes:\n  - {id: a, path: /a, upstream: up, plugins: [{name: no_such_plugin}]}\n"),
        "routes[0].plugins[0].name",
        ["unknown plugin 'no_such_plugin'"],
    ),
    "rewrite-unknown-param": (
        config_text("routes:\n  - {id: a, path: '/a/{id}', upstream: up, rewrite: '/b/{idd}'}\n"),
        "routes[0].rewrite",
        ["unknown parameter 'idd'", "did you mean 'id'?"],
    ),
    "admin-on-a-listener-port": (
        config_text() + 'admin: {bind: "0.0.0.0:18080", token: "t"}\n',
        "admin.bind",
        ["0.0.0.0:18080 overlaps listeners[0].bind (127.0.0.1:18080)"],
    ),
    "duplicate-route-id": (
        config_text("routes:\n  - {id: a, path: /a, upstream: up}\n  - {id: a, path: /b, upstream: up}\n"),
        "routes[1].id",
        ["duplicate route id 'a'", "routes[0]"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ROUTE))
def test_check_bad_file_names_file_and_key_path(tmp_path: Path, case: str) -> None:
    text, key_path, fragments = BAD_ROUTE[case]
    path = write(tmp_path, text)
    assert_config_error(run_cli("check", "-c", str(path)), path, key_path, *fragments)


def test_check_route_conflict_names_both_routes(tmp_path: Path) -> None:
    # Two routes answering the same request (same path, same method, same priority) is an error
    # on the later one, and the message must say which earlier route it collides with: with two
    # identical paths, the templates alone do not tell the operator which route to fix.
    path = write(
        tmp_path,
        config_text(
            "routes:\n"
            "  - {id: first, path: /same, upstream: up, methods: GET}\n"
            "  - {id: unrelated, path: /other, upstream: up}\n"
            "  - {id: second, path: /same, upstream: other, methods: [GET, POST]}\n"
        ),
    )
    line = assert_config_error(run_cli("check", "-c", str(path)), path, "routes[2].path", "conflicts")
    assert "'first'" in line or "routes[0]" in line, f"the conflicting route is not named: {line!r}"


def test_check_overlapping_constraints_name_both_routes(tmp_path: Path) -> None:
    # `abc` is hex and alpha: the hex route would take every such request from the alpha one.
    path = write(
        tmp_path,
        config_text(
            "routes:\n"
            "  - {id: by-hex, path: '/v/{v:hex}', upstream: up}\n"
            "  - {id: by-alpha, path: '/v/{name:alpha}', upstream: other, priority: 5}\n"
        ),
    )
    line = assert_config_error(run_cli("check", "-c", str(path)), path, "routes[1].path", "conflicts with")
    assert "route 'by-hex' (routes[0])" in line, line
    assert "'/v/{v:hex}'" in line and "'/v/{name:alpha}'" in line
    assert "'abc'" in line


def test_check_invalid_yaml_names_file_and_position(tmp_path: Path) -> None:
    path = write(tmp_path, "listeners: [\n  - name: x\n")
    assert_config_error(run_cli("check", "-c", str(path)), path, "", "invalid YAML at line 2, column 3")


def test_check_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert_config_error(run_cli("check", "-c", str(path)), path, "", "cannot read the file")


# -- routes ----------------------------------------------------------------------------------------


def test_routes_prints_the_table(tmp_path: Path) -> None:
    path = write(tmp_path, config_text())
    result = run_cli("routes", "-c", str(path))
    assert result.code == 0, result
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "LISTENERS", "METHODS", "HOSTS", "PATH", "UPSTREAM", "REWRITE", "PRIO"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == ["item", "files", "orders"]
    assert rows["item"][2:] == ["GET", "*", "/api/items/{id:int}", "up", "/items/{id}", "0"]
    assert rows["files"][4:6] == ["/files/{*rest}", "other"]


def test_routes_match_explains_the_route(tmp_path: Path) -> None:
    path = write(tmp_path, config_text())
    result = run_cli("routes", "-c", str(path), "--match", "GET http://api.example.com/api/items/42?v=1")
    assert result.code == 0, result
    out = result.stdout
    assert "route item (routes[0])" in out
    assert re.search(r"params:\s+\{'id': '42'\}", out)
    assert "http://127.0.0.1:9/items/42?v=1" in out
    assert re.search(r"plugins:\s+\S", out)


def test_routes_match_no_route_is_404_exit_1(tmp_path: Path) -> None:
    path = write(tmp_path, config_text())
    result = run_cli("routes", "-c", str(path), "--match", "GET http://host/nothing/here")
    assert result.code == 1, result
    assert "404" in result.stdout
    assert "Traceback" not in result.stderr


def test_routes_match_wrong_method_is_405_exit_1(tmp_path: Path) -> None:
    path = write(tmp_path, config_text())
    result = run_cli("routes", "-c", str(path), "--match", "DELETE http://host/orders")
    assert result.code == 1, result
    assert "405" in result.stdout
    assert "POST" in result.stdout  # what is allowed
    assert "Traceback" not in result.stderr


PREDICATE_ROUTES = """\
routes:
  - {id: items, path: "/items/{id}", upstream: up}
  - {id: items-v2, path: "/items/{id}", upstream: other, headers: {X-Version: "2"}}
  - {id: items-v3-beta, path: "/items/{id}", upstream: other, headers: {X-Version: "3", X-Beta: "yes"}}
  - {id: preview, path: "/items/{id}", upstream: up, query: {preview: ""}, priority: 1}
  - {id: api-host, path: "/items/{id}", upstream: up, host: api.example.com}
"""


def test_routes_match_takes_headers_like_curl(tmp_path: Path) -> None:
    path = write(tmp_path, config_text(PREDICATE_ROUTES))

    def explain(*args: str) -> CliResult:
        return run_cli("routes", "-c", str(path), "--match", "GET http://host/items/7", *args)

    plain = explain()
    assert plain.code == 0, plain
    assert "route items (routes[0])" in plain.stdout
    # The header route is not taken without its header, and the answer says what it needed.
    assert "passed over: route items-v2 (routes[1]): needs header x-version: 2 (not sent)" in plain.stdout
    with_header = explain("-H", "X-Version: 2")
    assert with_header.code == 0, with_header
    assert "route items-v2 (routes[1])" in with_header.stdout
    assert re.search(r"because:.*header x-version: 2", with_header.stdout)
    assert "http://127.0.0.1:10/items/7" in with_header.stdout  # the v2 route's upstream
    # Repeatable; names ignore case and the value's surrounding blanks go, as curl sends them.
    both = explain("-H", "x-version:3", "--header", "X-Beta:   yes")
    assert "route items-v3-beta (routes[2])" in both.stdout, both
    one = explain("-H", "X-Version: 3")
    assert "route items (routes[0])" in one.stdout
    assert "passed over: route items-v3-beta (routes[2]): needs header x-beta: yes (not sent)" in one.stdout
    assert "needs header x-version: 2 (sent '3')" in one.stdout
    # A Host header stands for the URL's host, as with curl.
    host = explain("-H", "Host: API.example.com:8443")
    assert "route api-host (routes[4])" in host.stdout, host


def test_routes_match_reads_query_predicates_from_the_url(tmp_path: Path) -> None:
    path = write(tmp_path, config_text(PREDICATE_ROUTES))
    taken = run_cli("routes", "-c", str(path), "--match", "GET http://host/items/7?preview&x=1")
    assert "route preview (routes[3])" in taken.stdout, taken
    assert re.search(r"because:.*query preview present; priority 1", taken.stdout)
    assert "http://127.0.0.1:9/items/7?preview&x=1" in taken.stdout
    missed = run_cli("routes", "-c", str(path), "--match", "GET http://host/items/7?x=1")
    assert "route items (routes[0])" in missed.stdout
    assert "passed over: route preview (routes[3]): needs query parameter 'preview' (not in the URL)" in (
        missed.stdout
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--match", "GET http://host/items/7", "-H", "X-Version 2"], 'expected a header as "Name: value"'),
        (["--match", "GET http://host/items/7", "-H", "X Version: 2"], 'expected a header as "Name: value"'),
        (["-H", "X-Version: 2"], "give --match too"),
    ],
)
def test_routes_header_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    path = write(tmp_path, config_text(PREDICATE_ROUTES))
    result = run_cli("routes", "-c", str(path), *args)
    assert result.code == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("request_text", ["garbage", "GET http://bad host/a", "GET http://host/%zz"])
def test_routes_match_malformed_request_is_usage_error(tmp_path: Path, request_text: str) -> None:
    path = write(tmp_path, config_text())
    result = run_cli("routes", "-c", str(path), "--match", request_text)
    assert result.code == 2, result
    assert result.stderr.startswith("fastgw: cannot explain"), result.stderr
    assert "Traceback" not in result.stderr


def _plugin_package(tmp_path: Path) -> Path:
    """A plugin installed the way third parties install one: an entry point in the
    ``fastgw.plugins`` group (a dist-info directory on the path), adding a request header."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "e2e_tag_plugin.py").write_text(
        textwrap.dedent(
            """\
            from fastgw.hooks import Plugin


            class TagPlugin(Plugin):
                name = "e2e_tag"

                def on_upstream_request(self, ctx):
                    ctx.upstream_headers.append((b"X-E2E-Tag", b"tagged"))
            """
        )
    )
    dist = root / "e2e_tag_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: e2e-tag-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[fastgw.plugins]\ne2e_tag = e2e_tag_plugin:TagPlugin\n")
    return root


def test_routes_match_lists_the_routes_plugins(tmp_path: Path) -> None:
    site = _plugin_package(tmp_path)
    path = write(
        tmp_path,
        config_text(
            "routes:\n  - {id: tagged, path: '/t/{name}', upstream: up, plugins: [{name: e2e_tag}]}\n"
        ),
    )
    result = run_cli("routes", "-c", str(path), "--match", "GET http://host/t/abc", env=cli_env([site]))
    assert result.code == 0, result
    assert "route tagged" in result.stdout
    assert re.search(r"params:\s+\{'name': 'abc'\}", result.stdout)
    assert re.search(r"plugins:\s+e2e_tag\b", result.stdout)
    # and an unknown plugin's error lists the installed ones
    bad = write(
        tmp_path,
        config_text("routes:\n  - {id: a, path: /a, upstream: up, plugins: [{name: e2e_tga}]}\n"),
        "bad.yaml",
    )
    assert_config_error(
        run_cli("check", "-c", str(bad), env=cli_env([site])), bad, "routes[0].plugins[0].name", "e2e_tag"
    )


def test_run_uses_an_entry_point_plugin(
    tmp_path: Path, run_gateway: RunGateway, upstream_proc: Upstream
) -> None:
    site = _plugin_package(tmp_path)
    doc = gateway_doc(
        upstream_proc.port,
        [{"id": "t", "path": "/{*rest}", "upstream": "up", "plugins": [{"name": "e2e_tag"}]}],
    )
    gw = run_gateway(doc, env=cli_env([site]))
    with connect(gw.port) as sock:
        sock.sendall(build_request("GET", "/echo/plugin"))
        response = read_response(sock)
    assert response.status == 200
    assert ["X-E2E-Tag", "tagged"] in response.json()["headers"]


# -- run -------------------------------------------------------------------------------------------


def test_run_invalid_config_exits_2_without_traceback(tmp_path: Path) -> None:
    path = write(
        tmp_path, config_text("routes:\n  - {id: a, path: '/a{x}', upstream: up}\n", port=free_port())
    )
    result = run_cli("run", "-c", str(path), timeout=15)
    assert_config_error(result, path, "routes[0].path", "whole segment")
    result = run_cli("run", "-c", str(path), "--workers", "2", timeout=15)
    assert_config_error(result, path, "routes[0].path", "whole segment")


def test_run_bad_worker_count_is_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path, config_text(port=free_port()))
    result = run_cli("run", "-c", str(path), "--workers", "0", timeout=15)
    assert result.code == 2 and "--workers must be at least 1" in result.stderr
    ephemeral = write(tmp_path, config_text(port=0), "ephemeral.yaml")
    result = run_cli("run", "-c", str(ephemeral), "--workers", "2", timeout=15)
    assert result.code == 2 and "port 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_without_c_reads_fastgw_yaml_in_the_current_directory(
    tmp_path: Path, procs: ProcessReaper, upstream_proc: Upstream
) -> None:
    # `fastgw run --workers 2` as an operator types it in the directory holding the config.
    write_config(tmp_path, gateway_doc(upstream_proc.port, port=free_port()), "fastgw.yaml")
    gateway = procs.start(fastgw_argv("run", "--workers", "2"), env=cli_env(), cwd=str(tmp_path))
    port = _wait_listening(gateway, 2, 15)
    with connect(port) as sock:
        sock.sendall(build_request("GET", "/echo/hello"))
        assert read_response(sock).status == 200
    assert "fastgw.yaml" in run_cli("run", "--help").stdout  # the default is documented


@pytest.mark.parametrize("command", [["run", "--workers", "8"], ["check"], ["routes"]])
def test_without_c_and_without_fastgw_yaml_the_error_names_the_file_and_c(
    tmp_path: Path, command: list[str]
) -> None:
    result = run_cli(*command, cwd=tmp_path, timeout=15)
    assert result.code == 2, result
    assert "./fastgw.yaml does not exist" in result.stderr
    assert f"fastgw {command[0]} -c " in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        (["--workers", "8"], "try fastgw run --workers 8"),
        (["--log-level", "WARNING", "-w", "2"], "try fastgw run -w 2"),
        (["--match", "GET http://h/x"], "try fastgw routes --match 'GET http://h/x'"),
    ],
)
def test_a_command_option_before_the_command_suggests_the_command(args: list[str], suggestion: str) -> None:
    result = run_cli(*args, timeout=15)
    assert result.code == 2, result
    assert suggestion in result.stderr
    assert "invalid choice" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port held by a plain listening socket (no SO_REUSEPORT), as another server would."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    with sock:
        yield sock.getsockname()[1]


def _assert_in_use_failure(result: CliResult, port: int) -> None:
    assert result.code not in (0, None), f"exit {result.code} although port {port} is in use\n{result.stderr}"
    assert "address already in use" in result.stderr.lower(), result.stderr
    assert str(port) in result.stderr
    assert "Traceback" not in result.stderr


def test_run_on_a_port_in_use_fails_clearly(tmp_path: Path, busy_port: int) -> None:
    path = write(tmp_path, config_text(port=busy_port))
    result = run_cli("run", "-c", str(path), timeout=15)
    _assert_in_use_failure(result, busy_port)


def test_run_workers_on_a_port_in_use_fails_clearly(tmp_path: Path, busy_port: int) -> None:
    # Every worker fails to bind: the supervisor must not report success (exit 0) for a gateway
    # that never served a request.
    path = write(tmp_path, config_text(port=busy_port))
    started = time.monotonic()
    result = run_cli("run", "-c", str(path), "--workers", "2", timeout=20)
    _assert_in_use_failure(result, busy_port)
    assert time.monotonic() - started < 10


def test_run_workers_on_a_port_another_gateway_serves_fails(
    tmp_path: Path, run_gateway: RunGateway, upstream_proc: Upstream, procs: ProcessReaper
) -> None:
    # SO_REUSEPORT lets any socket of the same user join the port's group: a second
    # `fastgw run --workers 2` started by mistake on a port a running gateway serves would
    # silently take part of its traffic, answering it with its own configuration. It must
    # refuse to start instead.
    first = run_gateway(gateway_doc(upstream_proc.port), workers=2)
    # The second configuration has no route for /echo/...: what it answers is a 404, what the
    # first answers is the echo upstream's 200.
    path = write(tmp_path, config_text(port=first.port), "second.yaml")
    second = procs.start(fastgw_argv("run", "-c", str(path), "--workers", "2"), env=cli_env())
    deadline = time.monotonic() + 6
    while second.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    if second.alive:
        statuses = [request_status(first.port) for _ in range(20)]
        pytest.fail(
            f"a second gateway serves port {first.port} beside the first one: it answered "
            f"{sum(status != 200 for status in statuses)} of 20 requests there (statuses {statuses})"
        )
    _assert_in_use_failure(CliResult(second.returncode or 0, second.stdout(), second.stderr()), first.port)
    assert first.proc.alive
    assert [request_status(first.port) for _ in range(5)] == [200] * 5


def request_status(port: int) -> int:
    with connect(port) as sock:
        sock.sendall(build_request("GET", "/echo/which", [("Connection", "close")]))
        return read_response(sock).status


# -- demo ------------------------------------------------------------------------------------------


def test_demo_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTGW_DEMO_BIND", raising=False)  # --smoke then binds 127.0.0.1:0
    result = run_cli("demo", "--smoke", timeout=60, cwd=tmp_path)
    assert result.code == 0, result
    check_smoke_lines([line for line in result.stdout.splitlines() if line.strip()])
    assert "Traceback" not in result.stderr


def check_smoke_lines(lines: list[str]) -> None:
    """Each line of a smoke run is ``STATUS URL``, all successes, through all three listeners."""
    assert lines
    schemes = set()
    for line in lines:
        status, url = line.split(" ", 1)
        scheme = url.split(":", 1)[0]
        if scheme in ("ws", "wss"):  # the live basket: switched, and an update came through
            assert status == "101", line
        else:
            assert status.isdigit() and 200 <= int(status) < 300, line
        assert url.startswith(f"{scheme}://127.0.0.1:"), line
        schemes.add(scheme)
    # The HTTPS listener too, verified against its certificate, and the WebSocket over both.
    assert schemes == {"http", "https", "ws", "wss"}
    ports = {url.split(":")[2].split("/")[0] for url in (line.split(" ", 1)[1] for line in lines)}
    assert len(ports) == 3  # the web gateway (HTTP, HTTPS) and the mobile gateway


def test_demo_smoke_in_registry_mode(tmp_path: Path, etcd: EtcdServer) -> None:
    """The services register in etcd, the gateway finds them there and answers every demo URL;
    on exit the services take their keys out again."""
    from fastgw.demo import REGISTRY_PREFIX

    result = run_cli("demo", "--registry", etcd.url, "--smoke", timeout=60, cwd=tmp_path)
    assert result.code == 0, result
    where, *lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert where.startswith(f"fastgw demo: the services registered in etcd at {etcd.url}: "), where
    for name in ("catalog", "basket", "discount", "ordering"):
        assert f" {REGISTRY_PREFIX}{name}/127.0.0.1:" in where, where
    check_smoke_lines(lines)
    assert "Traceback" not in result.stderr
    gone = etcd.etcdctl("get", "--prefix", "--keys-only", REGISTRY_PREFIX)
    assert (gone.returncode, gone.stdout.strip()) == (0, "")


def test_demo_registry_errors_name_the_cause(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    result = run_cli("demo", "--registry", nobody, "--smoke", timeout=60, cwd=tmp_path)
    assert result.code == 1, result
    assert f"cannot register in etcd at {nobody}: etcd unreachable" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("demo", "--registry", "127.0.0.1:2379", timeout=60, cwd=tmp_path)
    assert result.code == 2, result
    assert "--registry: expected an http:// or https:// URL" in result.stderr
