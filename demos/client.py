"""A command-line client of the demo server (``trio-ws-demo``), written with trio_ws.connect.

    trio-ws-demo --port 8000 &
    python demos/client.py --name Alice --ticks 5

It logs in, sends an echo, prints a few ticks of the price stream, and closes (1000). The
messages it speaks are those of docs/protocol.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import trio

import trio_ws


class Refused(Exception):
    """The server answered with an error message."""


async def receive_json(ws: trio_ws.WebSocketConnection) -> dict[str, Any]:
    """The next application message. Raises ConnectionClosed if the server closes."""
    message = json.loads(await ws.receive())  # the demo sends JSON text only
    if message.get("type") == "error":
        raise Refused(f"{message['code']}: {message['message']}")
    return message


async def run(url: str, name: str, text: str, ticks: int) -> None:
    # connect() does TCP + the opening handshake, and closes with 1000 when the block
    # ends, whichever way it ends. A dict passed to send() goes out as JSON text.
    async with trio_ws.connect(url) as ws:
        print(f"connected to {url}", flush=True)
        await ws.send({"type": "login", "name": name})
        print(f"welcome {(await receive_json(ws))['name']}", flush=True)

        await ws.send({"type": "echo", "text": text})
        print(f"echo: {(await receive_json(ws))['text']}", flush=True)

        await ws.send({"type": "streamed", "action": "subscribe"})
        seen = 0
        while seen < ticks:
            message = await receive_json(ws)
            if message["type"] == "subscribed":
                print(f"subscribed to {message['group']} at seq {message['seq']}", flush=True)
            elif message["type"] == "gap":  # only if we read too slowly
                print(f"missed ticks {message['from']}-{message['to']}", flush=True)
            elif message["type"] == "streamed":
                tick = message["data"]
                print(f"tick {message['seq']} {tick['symbol']} {tick['price']}", flush=True)
                seen += 1
            # Anything else is a message type this client does not know: ignore it.
    print(f"closed after {seen} ticks", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8000/ws")
    parser.add_argument("--name", default="cli", help="the name to log in with")
    parser.add_argument("--text", default="hello", help="what to echo")
    parser.add_argument("--ticks", type=int, default=5, help="stream ticks to print")
    args = parser.parse_args()
    if not args.url.startswith(("ws://", "wss://")):
        parser.error(f"not a WebSocket URL (ws:// or wss://): {args.url}")
    try:
        trio.run(run, args.url, args.name, args.text, args.ticks)
    except (OSError, trio_ws.HandshakeFailed) as exc:  # nobody listening, or not a WebSocket
        sys.exit(f"client: cannot connect to {args.url}: {exc}")
    except trio_ws.ConnectionClosed as exc:
        sys.exit(f"client: the server closed the connection ({exc.code} {exc.reason})")
    except Refused as exc:
        sys.exit(f"client: refused: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)  # Ctrl-C: the connection was closed on the way out


if __name__ == "__main__":
    main()
