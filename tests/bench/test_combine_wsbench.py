"""``benchmarks/combine_wsbench.py``: the median over the repetitions of several wsbench
runs, and the ratio to websockets' pooled median."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(tmp_path: Path, name: str, echo: dict[str, list[float]], paced: list[float]) -> Path:
    results = {
        "echo C=50": {s: [{"msgs_per_s": v} for v in vals] for s, vals in echo.items()},
        "paced": {"trio_ws": [{"server_us_per_delivery": v} for v in paced]},
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"meta": {}, "results": results}))
    return path


def test_repetitions_of_all_runs_are_pooled_before_the_median(tmp_path: Path) -> None:
    one = _run(tmp_path, "one", {"websockets": [10, 12, 11], "trio_ws": [20, 30, 25]}, [5.0])
    two = _run(tmp_path, "two", {"websockets": [9, 13, 10], "trio_ws": [21, 40, 22]}, [7.0])
    result = subprocess.run(
        [sys.executable, str(BENCH / "combine_wsbench.py"), str(one), str(two)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = {
        tuple(cell.strip() for cell in line.strip("|").split("|")[:2]): line
        for line in result.stdout.splitlines()[2:]
    }
    # websockets: median of 9,10,10,11,12,13 = 10.5; trio_ws: of 20,21,22,25,30,40 = 23.5.
    ws = rows[("echo C=50 (rt/s)", "websockets")]
    assert "| 10.5 | 1.00 | 6 | 11, 10 |" in ws
    trio_ws = rows[("echo C=50 (rt/s)", "trio_ws")]
    assert "| 23.5 | 2.24 | 6 | 25, 22 |" in trio_ws
    # No websockets figure for a scenario: the median without a ratio.
    assert "| 6 | n/a | 2 | 5, 7 |" in rows[("paced (µs/deliv)", "trio_ws")]
