"""The demo application of PROTOCOL.md and its ``trio-ws-demo`` command line."""

from .app import create_app

__all__ = ["create_app"]
