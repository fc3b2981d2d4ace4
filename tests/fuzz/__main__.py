"""Run one fuzz target under atheris (libFuzzer), coverage-guided, for as long as asked.

    python -m tests.fuzz TARGET [libFuzzer options] [CORPUS_DIR ...]

TARGET is one of the names printed by ``python -m tests.fuzz --help``. Useful options:
``-max_total_time=600`` (seconds), ``-runs=N``, ``-jobs=4 -workers=4``, ``-seed=1``.
Without a CORPUS_DIR the seeds of ``tests/fuzz/corpus.py`` go to a temporary directory;
pass one to keep what the fuzzer finds between runs (the first directory is written to).
A crash stops the run, prints the traceback and saves the input as ``crash-<sha1>``
(``-artifact_prefix=DIR/`` to put it elsewhere): turn it into a regression test in
``tests/protocol/`` and fix the core.

Needs the ``fuzz`` extra (``pip install -e '.[fuzz]'``; atheris has wheels for Linux
x86_64).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

# The keys of targets.TARGETS, listed here because importing targets before atheris
# instruments the core would leave the core without coverage feedback.
TARGET_NAMES = (
    "server_handshake",
    "client_handshake",
    "connection_server",
    "connection_client",
    "connection_server_deflate",
    "connection_client_deflate",
)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGET_NAMES:
        print(__doc__)
        print("targets:", ", ".join(TARGET_NAMES))
        sys.exit(0 if len(argv) >= 2 and argv[1] in ("-h", "--help") else 2)
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: pip install -e '.[fuzz]'")
    name, rest = argv[1], argv[2:]
    # Instrument the core for coverage: it must be imported here first, inside the block.
    with atheris.instrument_imports(include=["trio_ws"]):
        import trio_ws.protocol  # noqa: F401
    from . import targets
    from .corpus import seeds

    assert set(TARGET_NAMES) == set(targets.TARGETS)

    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as tmp:
        corpus = [arg for arg in rest if not arg.startswith("-")]
        options = [arg for arg in rest if arg.startswith("-")]
        seed_dir = Path(tmp) / "seeds"
        seed_dir.mkdir()
        for index, seed in enumerate(seeds(name)):
            (seed_dir / f"seed-{index:03d}").write_bytes(seed)
        if not corpus:
            work = Path(tmp) / "corpus"
            work.mkdir()
            corpus = [str(work)]
        atheris.Setup([argv[0], *options, *corpus, str(seed_dir)], targets.TARGETS[name])
        atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
