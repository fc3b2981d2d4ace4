"""``benchmarks/cross_node.py`` runs end to end, tiny: a real redis-server and the demo with
two workers, started and stopped by the script. Only that it runs and reports is checked;
its timings are not (speed is for the benchmark to print, not for a test to assert)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = ("--conns", "20", "--rounds", "5", "--reps", "1", "--idle-seconds", "0.5")


def test_cross_node_benchmark_runs_tiny_and_reports_every_part() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cross_node.py"), *TINY],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"\| same worker \| [\d.]+ \| [\d.]+ \|", out), out
    assert re.search(r"\| cross worker \| [\d.]+ \| [\d.]+ \|", out), out
    assert re.search(r"ratio cross / same: p50 [\d.]+x", out), out
    conns = [int(n) for n in re.findall(r"^\| [01] \| (\d+) \|", out, re.M)]
    assert sum(conns) == 20, out  # every idle connection found on one of the two workers
    for what in ("login", "routed", "subscribe", "publish"):
        assert re.search(rf"^- {what}: .*evalsha [\d.]+", out, re.M), out
    assert re.search(r"^- idle, per logged-in connection and second: ", out, re.M), out
    assert "Traceback" not in result.stderr
