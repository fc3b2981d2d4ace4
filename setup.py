"""Build hook for the optional C masking speedup; all metadata lives in pyproject.toml.

``optional=True`` lets the install succeed without a C compiler: trio_ws then uses its
pure-Python masking, which the test suite also exercises directly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "trio_ws.protocol._speedups",
            sources=["trio_ws/protocol/_speedups.c"],
            optional=True,
        )
    ]
)
