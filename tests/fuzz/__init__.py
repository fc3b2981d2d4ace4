"""Coverage-guided fuzzing of the sans-IO core: targets, seeds, an atheris runner.

A bounded run is part of the test suite (``test_fuzz.py``); a longer one::

    python -m tests.fuzz connection_server_deflate -max_total_time=600

See ``python -m tests.fuzz --help``.
"""
