"""A bounded fuzzing run of every target, so the suite (and CI) exercises them.

Two drivers, the same targets: hypothesis mutates the seeds (and tries plain random
bytes) a fixed number of times; atheris, when installed (the ``fuzz`` extra), runs each
target coverage-guided for a fixed number of inputs in a subprocess. A longer run is
``python -m tests.fuzz TARGET -max_total_time=600`` (README, "Tests").
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .__main__ import TARGET_NAMES
from .corpus import seeds
from .targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
ATHERIS_RUNS = 1000


@st.composite
def mutated_seed(draw: st.DrawFn, target: str) -> bytes:
    """A seed of ``target`` with a few random edits: the way a fuzzer starts."""
    data = bytearray(draw(st.sampled_from(seeds(target))))
    for _ in range(draw(st.integers(0, 6))):
        pos = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["flip", "insert", "delete", "repeat", "truncate"]))
        if edit == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif edit == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif edit == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif edit == "repeat":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 64))] * draw(st.integers(1, 50))
        elif edit == "truncate":
            del data[pos:]
    return bytes(data)


def test_the_runner_lists_every_target() -> None:
    assert set(TARGET_NAMES) == set(TARGETS)


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_every_seed_passes(name: str) -> None:
    found = seeds(name)
    assert found
    for seed in found:
        TARGETS[name](seed)


@pytest.mark.parametrize("name", TARGET_NAMES)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_hypothesis_run(name: str, data: st.DataObject) -> None:
    fuzz_input = data.draw(mutated_seed(name) | st.binary(max_size=512), label="input")
    TARGETS[name](fuzz_input)


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_atheris_run(name: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="coverage-guided fuzzing needs the fuzz extra")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz",
            name,
            f"-runs={ATHERIS_RUNS}",
            "-seed=1",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Done {ATHERIS_RUNS} runs" in result.stderr
    # Coverage feedback works: the core was instrumented (an import before the
    # instrumentation leaves only a handful of edges).
    coverage = [int(n) for n in re.findall(r"cov: (\d+)", result.stderr)]
    assert coverage, result.stderr[-2000:]
    assert max(coverage) > 100
