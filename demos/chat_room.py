"""A chat with rooms: join, leave, say, members, room history and private messages.

    python demos/chat_room.py --port 8000

Each room is a broadcast queue: one publish reaches every member, and the queue keeps the
last 50 messages so whoever joins late sees them first. After logging in
({"type": "login", "name": "Alice"}):

    > {"type": "join", "room": "lobby"}
    < {"type": "subscribed", "group": "lobby", "seq": 12}      (then the room's history)
    > {"type": "say", "room": "lobby", "text": "hi all"}
    < {"type": "said", "room": "lobby", "from": "Alice", "text": "hi all", "seq": 13}
    > {"type": "members", "room": "lobby"}
    < {"type": "members", "room": "lobby", "names": ["Alice", "Bob"]}
    > {"type": "private", "to": "Bob", "text": "psst"}         (Bob gets it, you get "sent")
    > {"type": "leave", "room": "lobby"}
    < {"type": "left", "room": "lobby"}
"""

from __future__ import annotations

import argparse
from typing import Any

import trio_ws

HISTORY = 50  # messages each room keeps for late joiners

# Rooms are not declared in advance: a queue is created the first time its name is used,
# with these options. Bad room names (not 1-64 of A-Z a-z 0-9 _ . -) raise QueueError,
# which the App turns into an error reply for the client, like a ServiceError.
app = trio_ws.App(
    login=trio_ws.unique_names(), queue_defaults=trio_ws.QueueOptions(history=HISTORY)
)


@app.service("join", fields={"room": str})
async def join(client: trio_ws.Client, message: dict[str, Any]) -> None:
    room = app.hub.get_or_create(message["room"])
    # `since` is the last seq the client saw of this room: everything kept after it is
    # replayed before the live messages, with no duplicate and no hole. A newcomer sends
    # none and gets the last HISTORY messages; one reconnecting sends its last seq. If part
    # of what it asks for is no longer kept, a {"type": "gap", "from": a, "to": b} says so.
    since = message.get("since", max(0, room.seq - HISTORY))
    if type(since) is not int or since < 0:
        raise trio_ws.ServiceError("bad_message", "'since' must be a non-negative integer")
    # reply=True (the default) queues {"type": "subscribed", "group": room, "seq": n}
    # ahead of the replay. Joining twice is harmless: nothing is delivered twice.
    await app.subscribe(client, room, since=since)


@app.service("leave", fields={"room": str})
async def leave(client: trio_ws.Client, message: dict[str, Any]) -> None:
    app.unsubscribe(client, message["room"])  # nothing of the room arrives after this
    await client.send({"type": "left", "room": message["room"]})


@app.service("say", fields={"room": str, "text": str})
async def say(client: trio_ws.Client, message: dict[str, Any]) -> None:
    if client.subscriber is None or message["room"] not in client.subscriber.subscriptions:
        raise trio_ws.ServiceError("not_joined", f"join {message['room']!r} first")
    # publish() never waits for a member: a slow one gets buffered (then a gap), never the
    # others; with the embedded broker it completes at once.
    # A dict is sent as JSON with its "seq" in the room added.
    said = {"type": "said", "room": message["room"], "from": client.name}
    await app.publish(message["room"], {**said, "text": message["text"]})


@app.service("members", fields={"room": str})
async def members(client: trio_ws.Client, message: dict[str, Any]) -> None:
    # Presence comes free with the queues: the names subscribed now, sorted ([] for a room
    # nobody created). A client that disconnects leaves all its rooms at once.
    names = await app.members(message["room"])
    await client.send({"type": "members", "room": message["room"], "names": names})


@app.service("private", fields={"to": str, "text": str})
async def private(client: trio_ws.Client, message: dict[str, Any]) -> None:
    # app.clients is the registry of logged-in clients by name. Nobody called "to" raises
    # UnknownClient, a ServiceError: the sender gets error / unknown_recipient.
    text = {"type": "private", "from": client.name, "text": message["text"]}
    await app.clients.send(message["to"], text)
    await client.send({"type": "sent", "to": message["to"]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    # Until Ctrl-C or SIGTERM; then every client gets 1001 and the program exits 0.
    app.run(
        args.host,
        args.port,
        on_ready=lambda addresses: print(
            f"chat_room: serving on ws://{addresses[0]}/ws", flush=True
        ),
    )


if __name__ == "__main__":
    main()
