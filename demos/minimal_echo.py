"""The smallest trio_ws application: clients log in with a unique name, then echo.

    python demos/minimal_echo.py --port 8000

Try it with any WebSocket client, e.g. ``python -m websockets ws://127.0.0.1:8000/ws``:

    > {"type": "login", "name": "Alice"}
    < {"type": "welcome", "name": "Alice"}
    > {"type": "echo", "text": "hello"}
    < {"type": "echo", "text": "hello"}
"""

from __future__ import annotations

import argparse
from typing import Any

import trio_ws

# One App per program. unique_names() is the login policy: the first message of every
# connection must be {"type": "login", "name": ...}; the name must be 1-32 characters of
# A-Z a-z 0-9 _ . - and not in use (case-insensitively). Until then, nothing below runs.
app = trio_ws.App(login=trio_ws.unique_names())


# A service handles one message "type". `fields` is checked before the handler runs: a
# message without a string "text" gets {"type": "error", "code": "bad_message", ...} and
# the connection lives on. `client` is the logged-in client (client.name, client.send).
@app.service("echo", fields={"text": str})
async def echo(client: trio_ws.Client, message: dict[str, Any]) -> None:
    await client.send(message)  # a dict goes out as one JSON text message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    # Serve until Ctrl-C or SIGTERM, then close every client with 1001 and return (exit 0);
    # a port in use is one line on stderr and exit status 1.
    app.run(
        args.host,
        args.port,
        on_ready=lambda addresses: print(
            f"minimal_echo: serving on ws://{addresses[0]}/ws", flush=True
        ),
    )


if __name__ == "__main__":
    main()
