"""A price ticker: a background task publishes prices; clients subscribe and resume.

    python demos/price_ticker.py --port 8000 [--interval 0.25]

After logging in ({"type": "login", "name": "Alice"}):

    > {"type": "subscribe"}
    < {"type": "subscribed", "group": "prices", "seq": 1200}
    < {"type": "price", "symbol": "TRIO", "price": 42.17, "time": 1767225600.1, "seq": 1201}
    ...
    > {"type": "subscribe", "since": 1201}     (after a reconnect: the last seq you saw)
    < {"type": "subscribed", "group": "prices", "seq": 1260}
    < the latest price of each symbol that changed meanwhile, then the live stream

Each price is published under its symbol as key, and the previous price of that symbol is
withdrawn (retracted) first: a client catching up gets the current price of each symbol,
not every intermediate tick. Sequence numbers skip the withdrawn ones.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import trio

import trio_ws

SYMBOLS = {"TRIO": 42.0, "NURS": 17.5, "SCOP": 128.0, "CHAN": 9.25}
HISTORY = 200  # prices kept for resuming clients...
TTL = 60.0  # ...for at most this many seconds: older ones are stale, never replayed


def make_app(interval: float) -> trio_ws.App:
    # Pseudonyms are not authenticated, so a held name is refused (name_taken) until its
    # connection ends; a reconnecting client resumes with `since`, not with a takeover.
    # (With signed_tokens(), on_name_conflict="takeover" would hand it the name back.)
    app = trio_ws.App(login=trio_ws.unique_names())
    prices = app.queue("prices", history=HISTORY, ttl=TTL)

    @app.background  # runs in the server's nursery; cancelled at shutdown
    async def feed() -> None:
        rng = random.Random()
        current = dict(SYMBOLS)
        while True:
            symbol = rng.choice(list(current))
            current[symbol] = round(max(0.01, current[symbol] * (1 + rng.gauss(0, 0.004))), 2)
            # The old price of `symbol` is superseded: withdraw it, so nobody still waiting
            # for it (a slow reader, a replay) gets it. No gap is reported for it.
            await prices.retract(symbol)
            update = {"type": "price", "symbol": symbol, "price": current[symbol]}
            # publish() never waits for a subscriber and adds "seq" to the JSON it sends.
            await prices.publish({**update, "time": round(time.time(), 3)}, key=symbol)
            await trio.sleep(interval)

    @app.service("subscribe")
    async def subscribe(client: trio_ws.Client, message: dict[str, Any]) -> None:
        since = message.get("since")  # optional, so checked here rather than by `fields`
        if since is not None and (type(since) is not int or since < 0):
            raise trio_ws.ServiceError("bad_message", "'since' must be a non-negative integer")
        # Replies {"type": "subscribed", "group": "prices", "seq": S}; with `since`, then a
        # {"type": "gap", ...} for whatever after `since` expired or fell out of the history,
        # then the kept prices after `since`, then the live ones after S. No duplicates.
        await app.subscribe(client, prices, since=since)

    @app.service("unsubscribe")
    async def unsubscribe(client: trio_ws.Client, _message: dict[str, Any]) -> None:
        app.unsubscribe(client, prices)
        await client.send({"type": "unsubscribed", "group": prices.name})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between prices")
    args = parser.parse_args()
    # Until Ctrl-C or SIGTERM: that stops the feed too, and clients get 1001.
    make_app(args.interval).run(
        args.host,
        args.port,
        on_ready=lambda addresses: print(
            f"price_ticker: serving on ws://{addresses[0]}/ws", flush=True
        ),
    )


if __name__ == "__main__":
    main()
