"""A client of the demo server that stays subscribed through restarts (trio_ws.open_session).

    trio-ws-demo --port 8000 &
    python demos/resuming_client.py --name Erin --group lobby

It logs in, joins the group and the price ticker, and prints every item it gets: the
messages with their seq, and the gaps and lost histories the session reports. Stop the
server and start it again: the session reconnects (backoff with jitter), logs in again
and resumes both queues where it stopped. With ``--broker redis://...`` on the server,
nothing is missed; with the memory broker, a restart prints ``history lost`` and the new
history follows. ``--count N`` stops after N items (0: run until Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys

import trio

import trio_ws


def describe(item: trio_ws.SubscriptionItem) -> str:
    if isinstance(item, trio_ws.Received):
        message = item.message
        if message["type"] == "streamed":
            data = message["data"]
            return f"[{item.queue} #{item.seq}] {data['symbol']} {data['price']}"
        return f"[{item.queue} #{item.seq}] {message.get('from')}: {message.get('text')}"
    if isinstance(item, trio_ws.QueueGap):
        return f"[{item.queue}] missed #{item.first}..#{item.last}"
    return (
        f"[{item.queue}] history lost after #{item.last_seq} "
        f"(epoch {item.previous_epoch} -> {item.epoch})"
    )


async def run(url: str, name: str, group: str, count: int) -> None:
    backoff = trio_ws.Backoff(initial=0.5, maximum=10.0)
    async with trio_ws.open_session(url, name=name, reconnect=backoff) as session:
        print(f"logged in as {session.name}", flush=True)
        room = await session.subscribe(group)
        ticker = await session.subscribe_stream()
        await session.publish(group, f"{session.name} is here")
        printed = 0
        done = trio.Event()

        async def show(sub: trio_ws.Subscription) -> None:
            nonlocal printed
            async with sub:
                async for item in sub:
                    print(describe(item), flush=True)
                    printed += 1
                    if printed == count:
                        done.set()
                        return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(show, room)
            nursery.start_soon(show, ticker)
            await done.wait()
            nursery.cancel_scope.cancel()
        stats = session.statistics()
        print(f"connections {stats.connections}, gaps {stats.gaps}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000/ws")
    parser.add_argument("--name", default="Erin")
    parser.add_argument("--group", default="lobby")
    parser.add_argument("--count", type=int, default=0, help="stop after N items (0: never)")
    args = parser.parse_args(argv)
    try:
        trio.run(run, args.url, args.name, args.group, args.count)
    except KeyboardInterrupt:
        return 0
    except trio_ws.SessionError as exc:
        print(f"resuming_client: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
