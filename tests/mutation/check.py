"""Compare the last ``mutmut run`` with the surviving mutants on record.

Usage, from the repository root, after ``mutmut run ...`` (docs/mutation.md)::

    .venv/bin/python tests/mutation/check.py

Prints the counts per module, then fails (exit 1) if a mutant survived, or reached no
test, that ``tests/mutation/survivors.txt`` does not list: kill it with a test, or add
it there with the reason it is equivalent. Listed mutants that were run and no longer
survive are reported too, so the list can only shrink. Mutants not run this time are
left out of the comparison.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

RECORD = Path(__file__).with_name("survivors.txt")
ALIVE = {"survived", "no tests"}


def recorded() -> set[str]:
    """The mutant names in the record (``name  # why`` lines; blank and ``#`` lines aside)."""
    names = set()
    for line in RECORD.read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.add(name)
    return names


def results() -> dict[str, str]:
    """``{mutant name: status}`` for every mutant mutmut knows of."""
    mutmut = Path(sys.executable).with_name("mutmut")
    out = subprocess.run(
        [str(mutmut), "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    statuses = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep:
            statuses[name] = status
    return statuses


def module_of(name: str) -> str:
    return name.split(".x", 1)[0]


def main() -> int:
    statuses = {n: s for n, s in results().items() if s != "not checked"}
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for name, status in statuses.items():
        counts[module_of(name)][status] += 1
    print(f"{'module':36} {'mutants':>7} {'killed':>7} {'alive':>6} {'alive %':>7}")
    for module, c in sorted(counts.items()):
        total = sum(c.values())
        alive = sum(c[s] for s in ALIVE)
        print(f"{module:36} {total:7} {total - alive:7} {alive:6} {100 * alive / total:6.1f}%")
    record = recorded()
    new = sorted(n for n, s in statuses.items() if s in ALIVE and n not in record)
    gone = sorted(n for n in record if n in statuses and statuses[n] not in ALIVE)
    for name in gone:
        print(f"killed now, delete from {RECORD.name}: {name}")
    for name in new:
        print(f"{statuses[name]}, not on record: {name}")
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main())
