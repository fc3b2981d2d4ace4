"""``python -m trio_ws`` runs the demo server (the same as ``trio-ws-demo``)."""

from .demo.cli import main

main()
