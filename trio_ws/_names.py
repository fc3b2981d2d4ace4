"""The one rule for names: client pseudonyms and queue (group) names.

PROTOCOL.md: "Names are 1-32 ASCII characters: letters, digits, ``_``, ``-`` and ``.``",
and "Group names follow the rules of pseudonyms but may be up to 64 characters". Short
enough for any log line or UI, and safe unescaped in URLs, file names and broker keys.
Names are compared case-insensitively everywhere (:func:`name_key`).
"""

from __future__ import annotations

import re
from typing import TypeGuard

__all__ = ["MAX_NAME_LENGTH", "MAX_QUEUE_NAME_LENGTH", "NAME_RE", "name_key", "valid_name"]

MAX_NAME_LENGTH = 32
MAX_QUEUE_NAME_LENGTH = 64

NAME_RE = re.compile(rf"[A-Za-z0-9_.\-]{{1,{MAX_NAME_LENGTH}}}")
"""A whole pseudonym (use with ``fullmatch``); :func:`valid_name` also takes other lengths."""

_NAME_CHARS = re.compile(r"[A-Za-z0-9_.\-]+")


def valid_name(name: object, *, max_length: int = MAX_NAME_LENGTH) -> TypeGuard[str]:
    """Whether ``name`` is a string of 1 to ``max_length`` of ``A-Z a-z 0-9 _ - .``."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= max_length
        and _NAME_CHARS.fullmatch(name) is not None
    )


def name_key(name: str) -> str:
    """The form under which a name is unique: ``"Alice"`` and ``"ALICE"`` are one name.

    Names are ASCII, so lower case is exact (no Unicode folding surprises).
    """
    return name.lower()
