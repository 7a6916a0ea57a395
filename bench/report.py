"""The bench's report: the per-round record of a contender (``Result``), the table printed, the
chart of ratios to nginx and the saved JSON (``results/``)."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Result:
    scenario: str
    contender: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # per request, user + system, proxy process tree
    user_us: float
    sys_us: float
    errors: int
    rounds: list[float] = field(default_factory=list)
    rss_mb: float = 0.0
    upstream_conns: int = -1  # connections the upstream accepted during the round (-1: not counted)
    p999_ms: float = 0.0  # constant-rate rounds only (bench/tail.py)


def print_table(rows: list[dict[str, object]]) -> None:
    head = (
        f"{'scenario':14} {'contender':9} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'cpu us':>7} "
        f"{'user':>6} {'sys':>6} {'x nginx rps':>11} {'x nginx cpu':>11} {'rss MB':>7} {'err':>4} "
        f"{'up conns':>8} {'p99.9 ms':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        rv, cv = r.get("rps_vs_nginx"), r.get("cpu_vs_nginx")
        # connections the upstream accepted in the round (churn); p99.9 at a constant rate
        opened = r.get("upstream_conns", -1)
        p999 = r.get("p999_ms")
        print(
            f"{r['scenario']:14} {r['contender']:9} {r['rps']:9.0f} {r['p50_ms']:7.3f} {r['p99_ms']:7.3f} "
            f"{r['cpu_us']:7.2f} {r['user_us']:6.2f} {r['sys_us']:6.2f} "
            f"{(f'{rv:.3f}' if rv else '-'):>11} {(f'{cv:.3f}' if cv else '-'):>11} "
            f"{r['rss_mb']:7.1f} {r['errors']:4} "
            f"{(str(opened) if isinstance(opened, int) and opened >= 0 else '-'):>8} "
            f"{(f'{p999:.3f}' if isinstance(p999, float) and p999 else '-'):>8}"
        )
    for r in rows:
        if "cpu_over_plain_us" in r:
            print(
                f"{r['scenario']}: fastgw spends {r['cpu_over_plain_us']} us more CPU per request than"
                f" plain fastgw ({r['user_over_plain_us']} us of it user space)"
            )
    for r in rows:
        lacks = r.get("nginx_lacks", [])
        for lack in lacks if isinstance(lacks, list) else []:
            print(f"{r['scenario']}: {lack}")
    failed = sorted({f"{r['scenario']}/{r['contender']}" for r in rows if r["errors"]})
    if failed:
        # Errors (socket errors or non-2xx) make a row's figures meaningless: say so, loudly.
        print(f"\nWARNING: errors in {', '.join(failed)}; their figures do not measure proxying")


def draw_chart(rows: list[dict[str, object]], path: Path) -> None:
    """Two panels over the same scenarios: requests/s and CPU per request, each relative to nginx
    in the same run (more requests/s is better; less CPU per request is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = [
        s
        for s in dict.fromkeys(str(r["scenario"]) for r in rows)
        if any(r.get("rps_vs_nginx") for r in rows if r["scenario"] == s)
    ]
    contenders = list(dict.fromkeys(str(r["contender"]) for r in rows))
    fig, (rps_ax, cpu_ax) = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    width = 0.8 / max(len(contenders), 1)
    panels = (
        (rps_ax, "rps_vs_nginx", "requests/s relative to nginx (higher is better)"),
        (cpu_ax, "cpu_vs_nginx", "CPU per request relative to nginx (lower is better)"),
    )
    for ax, key, label in panels:
        for i, name in enumerate(contenders):
            values = [
                next(
                    (
                        float(r[key])  # type: ignore[arg-type]
                        for r in rows
                        if r["scenario"] == s and r["contender"] == name and r.get(key)
                    ),
                    0.0,
                )
                for s in scenarios
            ]
            ax.bar([x + i * width for x in range(len(scenarios))], values, width, label=name)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylabel(label)
    # A ratio on a log scale: twice the CPU and half of it lie as far from nginx's 1.0, and a slow
    # peer's 18x does not flatten the rest.
    cpu_ax.set_yscale("log")
    cpu_ax.set_yticks([0.5, 1, 2, 5, 10, 20], ["0.5", "1", "2", "5", "10", "20"])
    cpu_ax.minorticks_off()
    cpu_ax.set_xticks([x + width * (len(contenders) - 1) / 2 for x in range(len(scenarios))], scenarios)
    cpu_ax.tick_params(axis="x", labelrotation=20)
    rps_ax.set_title("fastgw and peers, one worker each, same machine, same run")
    rps_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def save_results(rows: list[dict[str, object]], directory: Path, latest: bool) -> list[str]:
    """``<time>.json`` always; ``latest.json`` and ``latest.png`` (the README's) only when
    ``latest``, so a quick look never replaces the full run's figures. Returns lines to print."""
    directory.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    doc = {
        "when": stamp,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "results": rows,
    }
    text = json.dumps(doc, indent=2) + "\n"
    (directory / f"{stamp}.json").write_text(text)
    if not latest:
        return [
            f"results: {directory / f'{stamp}.json'}",
            f"not a full run: {directory / 'latest.json'} and latest.png are left as they are"
            " (--latest replaces them)",
        ]
    (directory / "latest.json").write_text(text)
    draw_chart(rows, directory / "latest.png")
    return [
        f"results: {directory / f'{stamp}.json'} and {directory / 'latest.json'}",
        f"chart: {directory / 'latest.png'}",
    ]
