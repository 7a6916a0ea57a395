"""The status page an operator keeps open, in headless Chromium over a real ``fastgw run``.

While traffic runs, an upstream fails its health checks and a breaker opens; the page's graphs
(the points it holds, the lines it drew) and the states it renders are checked against
``/metrics``; it stays within a phone's width and loads nothing from elsewhere; a screenshot is
saved in ``tests/artifacts`` (the one in ``docs/`` was made by this test). Beside it, the data
endpoints: behind the token, the configuration's revision and reload failures with key paths,
and the route explanation, the same as ``fastgw routes --match``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import (
    REPO,
    RunGateway,
    Samples,
    StartUpstream,
    Upstream,
    admin_call,
    run_cli,
    scrape_metrics,
    wait_for,
)
from tests.support.ports import free_port, wait_for_port
from tests.support.rawhttp import RawResponse, build_request, connect, read_response

ARTIFACTS = REPO / "tests" / "artifacts"
TOKEN = "status-page-token"


def _admin(port: int, path: str, method: str = "GET", token: str | None = TOKEN) -> tuple[int, Any]:
    return admin_call(port, path, method, token)


def _total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a family's samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def _get(port: int, target: str) -> RawResponse:
    with connect(port) as sock:
        sock.sendall(build_request("GET", target, [("Connection", "close")]))
        return read_response(sock, timeout=10)


@pytest.fixture
def chromium() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(
        options=options, service=Service(shutil.which("chromedriver") or "chromedriver")
    )
    try:
        yield driver
    finally:
        driver.quit()


def _page_doc(good: Upstream, sick: Upstream, admin_port: int) -> dict[str, Any]:
    closed = free_port()  # nothing listens: every attempt is refused
    echo = {"rewrite": "/echo/{rest}"}
    return {
        "listeners": [{"name": "main", "bind": f"127.0.0.1:{free_port()}"}],
        "admin": {"bind": f"127.0.0.1:{admin_port}", "token": TOKEN},
        "upstreams": {
            "app": {"targets": [f"127.0.0.1:{good.port}"]},
            "checked": {
                "targets": [f"127.0.0.1:{sick.port}"],
                "health": {"path": "/health", "interval": "200ms", "timeout": "200ms", "unhealthy_after": 2},
            },
            "fragile": {"targets": [f"127.0.0.1:{closed}"], "breaker": {"failures": 3, "open_for": "60s"}},
        },
        "routes": [
            {"id": "catalog", "path": "/catalog/{*rest}", "upstream": "app", "methods": ["GET"], **echo},
            {
                "id": "limited", "path": "/limited/{*rest}", "upstream": "app", **echo,
                "plugins": [{"name": "rate_limit", "limit": 5, "window": "60s", "key": "route"}],
            },
            {
                "id": "cached", "path": "/cached/{*rest}", "upstream": "app", "rewrite": "/cache/{rest}",
                "plugins": [{"name": "cache", "ttl": "60s"}],
            },
            {"id": "checked", "path": "/checked/{*rest}", "upstream": "checked", **echo},
            {"id": "fragile", "path": "/fragile", "upstream": "fragile"},
        ],
    }  # fmt: skip


def _drive(port: int, rounds: int, answers: list[RawResponse], sick: Upstream) -> None:
    """Rounds of requests a few tenths of a second apart (the graphs show a few seconds of
    traffic); a third of the way in, the checks of the upstream 'checked' start failing."""
    for i in range(rounds):
        if i == rounds // 3:
            sick.get_json("/health/set/503")
        for target in ("/catalog/a", f"/limited/{i}", "/cached/one", "/checked/x", "/fragile", "/nowhere"):
            answers.append(_get(port, target))
        time.sleep(0.3)


def _page_state(driver: Any) -> Any:
    return driver.execute_script("return window.fastgwStatus")


def _rendered_states(driver: Any) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#targets tbody tr")
    return {
        f"{r.get_attribute('data-upstream')}/{r.get_attribute('data-target')}": r.get_attribute("data-state")
        for r in rows
    }


def test_the_status_page_shows_live_graphs_and_states_that_match_the_metrics(
    run_gateway: RunGateway, start_upstream: StartUpstream, chromium: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    good, sick = start_upstream(), start_upstream()
    admin_port = free_port()
    doc = _page_doc(good, sick, admin_port)
    gw = run_gateway(doc, workers=2)
    wait_for_port(admin_port)
    fragile = doc["upstreams"]["fragile"]["targets"][0]
    checked = doc["upstreams"]["checked"]["targets"][0]

    chromium.get(f"http://127.0.0.1:{admin_port}/")
    form = WebDriverWait(chromium, 20).until(lambda d: d.find_element(By.ID, "token-form"))
    WebDriverWait(chromium, 20).until(lambda d: form.is_displayed())  # the data needs the token
    chromium.find_element(By.ID, "token").send_keys(TOKEN)
    form.submit()
    WebDriverWait(chromium, 20).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded")
    )

    answers: list[RawResponse] = []
    traffic = threading.Thread(target=_drive, args=(gw.port, 30, answers, sick))
    traffic.start()
    traffic.join(60)
    assert not traffic.is_alive()
    stopped = time.time()
    states = wait_for(
        lambda: (
            (s := _rendered_states(chromium)).get(f"checked/{checked}") == "failing_checks"
            and s.get(f"fragile/{fragile}") == "breaker_open"
            and s
        ),
        20,
        "the page to show the failing checks and the open breaker",
    )
    assert states[f"app/127.0.0.1:{good.port}"] == "healthy"
    # Two points taken after the traffic stopped: the second was asked for after it, surely.
    wait_for(
        lambda: sum(p["t"] > stopped for p in _page_state(chromium)["series"]) >= 2, 20, "two new points"
    )
    page = _page_state(chromium)
    metrics = scrape_metrics(admin_port, TOKEN)

    # The graphs' points add up to what /metrics counted, route by route and overall.
    series = page["series"]
    for route in ("catalog", "limited", "cached", "checked", "fragile", "(unmatched)"):
        counted = sum(p["routes"].get(route, {}).get("n", 0) for p in series)
        assert counted == _total(metrics, "fastgw_requests_total", route=route) > 0, route
        errors = sum(p["routes"].get(route, {}).get("n5", 0) for p in series)
        assert errors == _total(metrics, "fastgw_requests_total", route=route, status="5xx"), route
    assert sum(p["total"]["n"] for p in series) == _total(metrics, "fastgw_requests_total") == len(answers)
    assert sum(p["total"]["n4"] for p in series) == _total(metrics, "fastgw_requests_total", status="4xx")
    assert (
        sum(p["limited"] for p in series) == _total(metrics, "fastgw_requests_denied_total", status="429") > 0
    )
    for upstream in ("app", "fragile"):
        attempts = sum(p["upstreams"].get(upstream, {}).get("n", 0) for p in series)
        assert attempts == _total(metrics, "fastgw_upstream_target_responses_total", upstream=upstream) > 0
    hits = sum(p["cache"]["hits"] for p in series if p["cache"])
    cache = "fastgw_cache_requests_total"
    assert hits == _total(metrics, cache, result="hit") + _total(metrics, cache, result="stale") > 0
    # ... and so do the lines the page drew (rates: count / dt per point).
    drawn = {line["label"]: line["values"] for line in page["charts"]["chart-requests"]}
    dts = {p["t"]: p["dt"] for p in series}
    assert sum(v * dts[t] for t, v in drawn["requests/s"]) == pytest.approx(len(answers))
    assert sum(v * dts[t] for t, v in drawn["5xx/s"]) == pytest.approx(
        _total(metrics, "fastgw_requests_total", status="5xx")
    )
    # One route's graphs, and one upstream's, once its row is clicked.
    chromium.find_element(By.CSS_SELECTOR, "#routes tr[data-route='fragile']").click()
    drawn = {line["label"]: line["values"] for line in _page_state(chromium)["charts"]["chart-requests"]}
    fragile_5xx = _total(metrics, "fastgw_requests_total", route="fragile", status="5xx")
    assert sum(v * dts[t] for t, v in drawn["5xx/s"] if t in dts) == pytest.approx(fragile_5xx)
    chromium.find_element(By.CSS_SELECTOR, "#upstreams tr[data-upstream='app']").click()
    drawn = {line["label"]: line["values"] for line in _page_state(chromium)["charts"]["chart-requests"]}
    app_attempts = _total(metrics, "fastgw_upstream_target_responses_total", upstream="app")
    assert sum(v * dts[t] for t, v in drawn["attempts/s"] if t in dts) == pytest.approx(app_attempts)
    assert "upstream app" in chromium.find_element(By.ID, "scope-name").text
    chromium.find_element(By.ID, "scope-reset").click()
    assert not chromium.find_element(By.ID, "chart-refusals").get_attribute("hidden")
    assert not chromium.find_element(By.ID, "chart-cache").get_attribute("hidden")

    # The states the page holds are the ones /metrics has, worker by worker.
    targets = {f"{t['upstream']}/{t['target']}": t for t in page["targets"]}
    assert _total(metrics, "fastgw_upstream_target_up", upstream="checked") == 0
    assert _total(metrics, "fastgw_upstream_target_up", upstream="app") == 1
    for view in targets[f"fragile/{fragile}"]["workers"]:
        is_open = _total(
            metrics,
            "fastgw_upstream_breaker_state",
            upstream="fragile",
            state="open",
            worker=str(view["worker"]),
        )
        assert (view["breaker"]["state"] == "open") == (is_open == 1)
        assert view["breaker"]["state"] != "open" or 0 < view["breaker"]["trial_in"] <= 60
    assert {w["worker"] for w in targets[f"fragile/{fragile}"]["workers"]} == {0, 1}

    # The recent errors: the last refused request is there, with its reason and request id.
    last_fragile = [a for a in answers if a.status == 503][-1]
    row = chromium.find_element(
        By.CSS_SELECTOR, f"#errors tr[data-request-id='{last_fragile.header('x-request-id')}']"
    )
    assert row.get_attribute("data-status") == "503"
    assert "circuit breaker open for every target in upstream 'fragile'" in row.text
    statuses = {e["status"] for e in page["errors"]}
    assert {502, 503, 404, 429} <= statuses and 200 not in statuses

    # Nothing from elsewhere, and within a phone's width.
    origin = f"http://127.0.0.1:{admin_port}/"
    loaded = chromium.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(origin) for url in loaded), loaded
    ARTIFACTS.mkdir(exist_ok=True)
    chromium.execute_script("window.scrollTo(0, 0)")
    height = chromium.execute_script("return document.documentElement.scrollHeight")
    chromium.set_window_size(1280, height + 120)
    chromium.save_screenshot(str(ARTIFACTS / "status-page.png"))
    chromium.set_window_size(390, 844)
    wait_for(lambda: chromium.execute_script("return window.innerWidth") <= 390, 5, "the phone width")
    chromium.execute_script("window.dispatchEvent(new Event('resize'))")
    overflow = chromium.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0  # the wide tables scroll inside their own boxes
    chromium.save_screenshot(str(ARTIFACTS / "status-page-phone.png"))
    assert (ARTIFACTS / "status-page.png").stat().st_size > 0


# -- the data endpoints ----------------------------------------------------------------------------


def test_the_pages_data_needs_the_token_and_its_files_do_not(
    run_gateway: RunGateway, upstream_proc: Upstream, start_upstream: StartUpstream
) -> None:
    admin_port = free_port()
    run_gateway(_page_doc(upstream_proc, start_upstream(), admin_port))
    wait_for_port(admin_port)
    for path in ("/series", "/targets", "/errors", "/config", "/match?url=http://x/"):
        assert _admin(admin_port, path, token=None)[0] == 401, path
        assert _admin(admin_port, path)[0] == 200, path
    for path in ("/", "/status.js"):
        request = urllib.request.Request(f"http://127.0.0.1:{admin_port}{path}")
        with urllib.request.urlopen(request, timeout=15) as response:
            assert response.status == 200
            assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert _admin(admin_port, "/series?since=yesterday")[0] == 400


def test_config_shows_the_revision_and_reload_failures_with_their_key_paths(
    run_gateway: RunGateway, upstream_proc: Upstream, start_upstream: StartUpstream
) -> None:
    admin_port = free_port()
    doc = _page_doc(upstream_proc, start_upstream(), admin_port)
    gw = run_gateway(doc, workers=2)
    wait_for_port(admin_port)
    status, config = _admin(admin_port, "/config")
    assert status == 200
    assert config["digest"] == "sha256:" + hashlib.sha256(gw.config_path.read_bytes()).hexdigest()
    assert (config["loaded_by"], config["reload_failures"], config["revision"]) == ("start", [], None)
    doc["routes"][0]["upstream"] = "nowhere"
    gw.config_path.write_text(yaml.safe_dump(doc))
    assert _admin(admin_port, "/reload", "POST")[0] == 400
    (failure,) = _admin(admin_port, "/config")[1]["reload_failures"]
    assert (failure["trigger"], failure["key_path"], failure["file"]) == (
        "admin",
        "routes[0].upstream",
        str(gw.config_path),
    )
    assert "nowhere" in failure["message"]
    doc["routes"][0]["upstream"] = "app"
    doc["routes"].append({"id": "added", "path": "/added", "upstream": "app"})
    gw.config_path.write_text(yaml.safe_dump(doc))
    os.kill(gw.pid, signal.SIGHUP)
    config = wait_for(
        lambda: (c := _admin(admin_port, "/config")[1])["loaded_by"] == "signal" and c, 10, "the reload"
    )
    assert config["digest"] == "sha256:" + hashlib.sha256(gw.config_path.read_bytes()).hexdigest()
    assert config["reloads"] == {"succeeded": 1, "failed": 1} and config["last_reload_ok"] is True
    assert config["routes"] == 6


def test_match_explains_a_request_as_fastgw_routes_match_does(
    run_gateway: RunGateway, upstream_proc: Upstream, start_upstream: StartUpstream
) -> None:
    admin_port = free_port()
    doc = _page_doc(upstream_proc, start_upstream(), admin_port)
    doc["routes"].insert(
        0, {"id": "v2", "path": "/catalog/{*rest}", "upstream": "app", "headers": {"X-Version": "2"}}
    )
    gw = run_gateway(doc)
    wait_for_port(admin_port)
    for url, headers in (
        ("http://shop.test/catalog/7?x=1", ["X-Version: 2"]),
        ("http://shop.test/catalog/7", []),
    ):
        query = urllib.parse.urlencode([("method", "GET"), ("url", url), *(("header", h) for h in headers)])
        status, answer = _admin(admin_port, f"/match?{query}")
        cli = run_cli(
            "routes",
            "-c",
            str(gw.config_path),
            "--match",
            f"GET {url}",
            *(a for h in headers for a in ("-H", h)),
        )
        assert status == 200 and cli.code == 0
        assert answer["matched"] is True and answer["lines"] == cli.stdout.splitlines()
    status, answer = _admin(
        admin_port, "/match?" + urllib.parse.urlencode({"url": "http://x/", "header": "no colon"})
    )
    assert status == 400 and answer["error"].startswith("header: expected a header as")
    assert _admin(admin_port, "/match")[0] == 400
    status, answer = _admin(admin_port, "/match?" + urllib.parse.urlencode({"url": "http://x/nothing"}))
    assert status == 200 and answer["matched"] is False and "no route matches" in answer["lines"][0]
