"""The benchmark's report: wrk output parsing and ratios to nginx (the numbers people read)."""

from __future__ import annotations

from bench.run import SCENARIOS, Result, Scenario, parse_wrk, scenario_contenders, with_ratios

WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:40000/items/1
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.53ms  420.11us   9.87ms   85.00%
    Req/Sec    42.01k     1.20k   44.10k    70.00%
  Latency Distribution
     50%    1.31ms
     75%    1.70ms
     90%    2.05ms
     99%  870.00us
  209045 requests in 5.00s, 38.08MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 5
Requests/sec:  41808.99
Transfer/sec:      7.61MB
"""


def test_parse_wrk_reads_counts_latency_units_and_errors() -> None:
    run = parse_wrk(WRK_OUTPUT)
    assert run["requests"] == 209045
    assert run["rps"] == 41808.99
    assert run["p50"] == 1.31
    assert run["p99"] == 0.87  # microseconds converted to milliseconds
    assert run["errors"] == 3 + 1 + 2 + 5


def test_the_percentiles_are_read_from_the_distribution_not_the_thread_stats() -> None:
    # The Req/Sec line's +/- Stdev column can end in "50%" or "99%": it is not a percentile.
    out = WRK_OUTPUT.replace("42.01k     1.20k   44.10k    70.00%", "42.01k     1.20k   44.10k    71.50%")
    out = out.replace("1.53ms  420.11us   9.87ms   85.00%", "1.53ms  420.11us   9.87ms   84.99%")
    run = parse_wrk(out)
    assert (run["p50"], run["p99"]) == (1.31, 0.87)


def test_ratios_are_against_nginx_in_the_same_scenario() -> None:
    def result(scenario: str, contender: str, rps: float, cpu: float) -> Result:
        return Result(scenario, contender, rps, 1.0, 2.0, cpu, cpu / 2, cpu / 2, 0)

    rows = with_ratios(
        [
            result("small", "nginx", 40000, 20.0),
            result("small", "fastgw", 30000, 30.0),
            result("big", "nginx", 10000, 50.0),
            result("big", "fastgw", 12000, 40.0),
        ]
    )
    by = {(r["scenario"], r["contender"]): r for r in rows}
    assert by[("small", "fastgw")]["rps_vs_nginx"] == 0.75
    assert by[("small", "fastgw")]["cpu_vs_nginx"] == 1.5
    assert by[("big", "fastgw")]["rps_vs_nginx"] == 1.2
    assert by[("big", "nginx")]["rps_vs_nginx"] == 1.0


def test_feature_scenarios_report_their_cost_over_plain_fastgw() -> None:
    def result(scenario: str, contender: str, cpu: float, user: float) -> Result:
        return Result(scenario, contender, 40000, 1.0, 2.0, cpu, user, cpu - user, 0)

    rows = with_ratios(
        [
            result("small-get", "fastgw", 20.0, 7.0),
            result("jwt+ratelimit", "nginx", 18.0, 6.0),
            result("jwt+ratelimit", "fastgw", 24.5, 10.5),
        ]
    )
    by = {(r["scenario"], r["contender"]): r for r in rows}
    assert by[("jwt+ratelimit", "fastgw")]["cpu_over_plain_us"] == 4.5
    assert by[("jwt+ratelimit", "fastgw")]["user_over_plain_us"] == 3.5
    assert "cpu_over_plain_us" not in by[("jwt+ratelimit", "nginx")]
    assert "cpu_over_plain_us" not in by[("small-get", "fastgw")]


def test_a_baseline_build_runs_right_after_fastgw_wherever_fastgw_runs() -> None:
    small_get = next(s for s in SCENARIOS if s.name == "small-get")
    assert scenario_contenders(small_get, baseline=False) == list(small_get.contenders)
    with_baseline = scenario_contenders(small_get, baseline=True)
    assert with_baseline[with_baseline.index("fastgw") + 1] == "baseline"
    assert "bare" in with_baseline  # the floor runs in the small GET
    assert scenario_contenders(Scenario("x", "/", contenders=("nginx",)), baseline=True) == ["nginx"]
