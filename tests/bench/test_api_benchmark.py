"""``benchmarks/api.py`` as a user runs it: it starts its server, measures both kinds of
request, prints the ratio and leaves no process behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_the_api_benchmark_prints_rates_and_their_ratio() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "api.py"), "--count", "40", "--threads", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^healthz: [\d,]+ requests/s", result.stdout, re.M)
    assert re.search(r"^publish: [\d,]+ requests/s \(subscriber received 40\)", result.stdout, re.M)
    assert re.search(r"^ratio publish/healthz: \d+\.\d\d$", result.stdout, re.M)
