"""Median over the repetitions of several wsbench runs, with ratios to ``websockets``.

One wsbench run of 3 repetitions on a noisy 2-core machine can put a figure anywhere in a
wide spread. Pooling the repetitions of runs made the same way (the same servers and
scenarios) gives each figure a median over all of them; each ratio is that median over
``websockets``' median from the same pool::

    python benchmarks/combine_wsbench.py /tmp/wsb/run1/results.json /tmp/wsb/run2/results.json

Prints one Markdown table: per scenario and server, the pooled median, its ratio, the
number of repetitions and the spread of the per-run medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

# The figure that stands for each scenario, as wsbench reports it.
_PRIMARY = {
    "idle": ("kib_per_conn", "KiB/conn"),
    "broadcast": ("deliveries_per_s", "deliv/s"),
    "paced": ("server_us_per_delivery", "µs/deliv"),
}


def primary(scenario: str) -> tuple[str, str]:
    """The result field and unit of a wsbench scenario."""
    if scenario in _PRIMARY:
        return _PRIMARY[scenario]
    if scenario.startswith("large"):
        return ("MB_per_s", "MB/s")
    return ("msgs_per_s", "rt/s")


def pool(runs: list[dict[str, Any]]) -> dict[str, dict[str, list[list[float]]]]:
    """scenario -> server -> the values of each run (a list per run)."""
    pooled: dict[str, dict[str, list[list[float]]]] = {}
    for run in runs:
        for scenario, servers in run["results"].items():
            field, _ = primary(scenario)
            for server, reps in servers.items():
                values = [float(rep[field]) for rep in reps if rep.get(field) is not None]
                if values:
                    pooled.setdefault(scenario, {}).setdefault(server, []).append(values)
    return pooled


def fmt(value: float) -> str:
    """wsbench's style: whole numbers with separators from 100 up, 3 digits below."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def table(pooled: dict[str, dict[str, list[list[float]]]]) -> str:
    lines = [
        "| scenario | server | median | ratio | reps | per-run medians |",
        "|---|---|--:|--:|--:|---|",
    ]
    for scenario, servers in pooled.items():
        _, unit = primary(scenario)
        base = servers.get("websockets")
        base_median = statistics.median(v for run in base for v in run) if base else None
        for server, per_run in servers.items():
            values = [v for run in per_run for v in run]
            median = statistics.median(values)
            ratio = f"{median / base_median:.2f}" if base_median else "n/a"
            runs = ", ".join(fmt(statistics.median(run)) for run in per_run)
            lines.append(
                f"| {scenario} ({unit}) | {server} | {fmt(median)} | {ratio} "
                f"| {len(values)} | {runs} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="wsbench results.json files")
    args = parser.parse_args()
    runs = [json.loads(path.read_text()) for path in args.results]
    print(table(pool(runs)))


if __name__ == "__main__":
    main()
