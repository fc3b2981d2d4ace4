"""A WebSocket echo server and client on blocking sockets, using only ``trio_ws.protocol``.

No trio and no event loop: the sans-IO core turns bytes into events and calls into bytes,
and this script moves the bytes with ``socket.recv`` and ``socket.sendall``, one thread
per connection. It speaks permessage-deflate when the peer offers it.

    python demos/sansio_echo.py serve --port 8765
    python demos/sansio_echo.py client ws://127.0.0.1:8765/ hello "second message"

The server echoes every message and closes every client with 1001 on Ctrl-C or SIGTERM.
The client sends each argument as a text message, prints what comes back, and closes.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time
import urllib.parse
from types import FrameType

from trio_ws.protocol import (
    EXTENSION_NAME,
    BytesMessage,
    ClientHandshake,
    Close,
    ConnectionState,
    Event,
    InvalidStatus,
    RemoteProtocolError,
    Role,
    ServerHandshake,
    TextMessage,
    WebSocketProtocol,
    client_offer,
    negotiate_client,
    negotiate_server,
)

READ_SIZE = 65536
POLL_INTERVAL = 0.2  # seconds a blocked recv() waits before looking at the stop flag
CLOSE_TIMEOUT = 2.0  # seconds to wait for the peer's Close (or its TCP FIN) after ours


def exchange(sock: socket.socket, proto: WebSocketProtocol, data: bytes) -> list[Event]:
    """Feed what ``recv`` returned (``b""``: end of stream), write what the core owes.

    The core answers Pings and Closes itself and queues a Close when the peer breaks the
    protocol, so its bytes go out after every read, before anything else happens.
    """
    try:
        if data:
            proto.receive_data(data)
        else:
            proto.receive_eof()
    except RemoteProtocolError as exc:
        print(f"protocol error, closing with {exc.close_code}: {exc.reason}", flush=True)
    finally:
        flush(sock, proto)
    return proto.events_received()


def flush(sock: socket.socket, proto: WebSocketProtocol) -> None:
    out = proto.data_to_send()
    if out:
        try:
            sock.sendall(out)
        except OSError:  # the peer is gone; the next recv() reports it
            pass


# ---------------------------------------------------------------------------------------
# server


def serve_connection(sock: socket.socket, peer: str, stop: threading.Event) -> None:
    """One connection: the opening handshake, then echo until either side closes."""
    with sock:
        sock.settimeout(POLL_INTERVAL)
        proto = handshake(sock, stop)
        if proto is None:
            return
        print(f"{peer}: open (deflate: {proto.deflate is not None})", flush=True)
        closing_since: float | None = None
        while proto.state is not ConnectionState.CLOSED:
            if stop.is_set() and proto.state is ConnectionState.OPEN:
                proto.send_close(1001, "server shutting down")  # RFC 6455 §7.4.1
                flush(sock, proto)
            if proto.state is ConnectionState.CLOSING:
                closing_since = closing_since or time.monotonic()
                if time.monotonic() - closing_since > CLOSE_TIMEOUT:
                    break
            try:
                data = sock.recv(READ_SIZE)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            for event in exchange(sock, proto, data):
                if proto.state is not ConnectionState.OPEN:
                    continue  # §5.5.1: no data frames after a Close
                if isinstance(event, TextMessage):
                    proto.send_text(event.data)
                elif isinstance(event, BytesMessage):
                    proto.send_bytes(event.data)
            flush(sock, proto)
        # §7.1.1: "the server ... SHOULD close the underlying TCP connection" first.
        close = proto.close_received or proto.close_sent
        print(f"{peer}: closed ({close.code if close else 1006})", flush=True)


def handshake(sock: socket.socket, stop: threading.Event) -> WebSocketProtocol | None:
    """Read the request and answer it; the open connection, or None after a refusal."""
    server = ServerHandshake()
    request = None
    while request is None:
        if stop.is_set():
            return None
        try:
            data = sock.recv(READ_SIZE)
        except TimeoutError:
            continue
        except OSError:
            return None
        if not data:
            return None
        try:
            request = server.receive_data(data)
        except RemoteProtocolError as exc:
            # The error carries the HTTP status to answer with (400, 426, 431, 505).
            sock.sendall(server.reject(exc.http_status or 400, body=exc.reason + "\n"))
            return None
    if not request.is_websocket:
        sock.sendall(server.reject(426, body="this is a WebSocket echo server\n"))
        return None
    deflate = negotiate_server(request.extensions)
    extensions = [deflate.response_value()] if deflate is not None else []
    sock.sendall(server.accept(extensions=extensions))
    proto = WebSocketProtocol(Role.SERVER, deflate=deflate)
    if server.trailing_data:  # frames that came with the request
        for event in exchange(sock, proto, server.trailing_data):
            if isinstance(event, TextMessage):
                proto.send_text(event.data)
            elif isinstance(event, BytesMessage):
                proto.send_bytes(event.data)
        flush(sock, proto)
    return proto


def serve(host: str, port: int) -> None:
    """Accept connections until SIGINT or SIGTERM, then close them all with 1001."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    threads: list[threading.Thread] = []
    with socket.create_server((host, port)) as listener:
        listener.settimeout(POLL_INTERVAL)
        bound_host, bound_port = listener.getsockname()[:2]
        print(f"sansio_echo: serving on ws://{bound_host}:{bound_port}/", flush=True)
        while not stop.is_set():
            try:
                sock, address = listener.accept()
            except TimeoutError:
                continue
            peer = f"{address[0]}:{address[1]}"
            thread = threading.Thread(target=serve_connection, args=(sock, peer, stop))
            thread.start()
            threads = [t for t in threads if t.is_alive()] + [thread]
    for thread in threads:
        thread.join()
    print("sansio_echo: stopped", flush=True)


# ---------------------------------------------------------------------------------------
# client


def run_client(url: str, messages: list[str]) -> int:
    """Send each message, print its echo, close; the exit status."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ws" or parts.hostname is None:
        print(f"only ws:// URLs are supported, not {url!r}", file=sys.stderr)
        return 2
    port = parts.port or 80
    host = parts.netloc.rpartition("@")[2]  # the Host header: host[:port]
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    with socket.create_connection((parts.hostname, port), timeout=5) as sock:
        client = ClientHandshake(host, target, extensions=[client_offer()])
        sock.sendall(client.data_to_send())
        response = None
        try:
            while response is None:
                data = sock.recv(READ_SIZE)
                if not data:
                    print("the server closed the connection during the handshake", file=sys.stderr)
                    return 1
                response = client.receive_data(data)
            deflate = None
            for extension in response.extensions:
                if extension.name == EXTENSION_NAME:
                    deflate = negotiate_client(extension)
        except InvalidStatus as exc:
            print(f"handshake refused: HTTP {exc.response.status}", file=sys.stderr)
            return 1
        except RemoteProtocolError as exc:
            print(f"invalid handshake response: {exc.reason}", file=sys.stderr)
            return 1
        proto = WebSocketProtocol(Role.CLIENT, deflate=deflate)
        print(f"connected (deflate: {deflate is not None})", flush=True)
        pending = exchange(sock, proto, client.trailing_data) if client.trailing_data else []
        for message in messages:
            proto.send_text(message)
            flush(sock, proto)
            print(f"> {message}", flush=True)
            event = next_message(sock, proto, pending)
            if isinstance(event, Close):
                print(f"closed by the server: {event.code} {event.reason}", flush=True)
                return 1
            print(f"< {event.data!r}", flush=True)
        proto.send_close(1000)
        flush(sock, proto)
        # §7.1.1: after the closing handshake the client waits for the server to close TCP.
        while proto.state is not ConnectionState.CLOSED:
            try:
                exchange(sock, proto, sock.recv(READ_SIZE))
            except TimeoutError:
                break
        close = proto.close_received
        print(f"closed: {close.code if close else 1006}", flush=True)
    return 0


def next_message(
    sock: socket.socket, proto: WebSocketProtocol, pending: list[Event]
) -> TextMessage | BytesMessage | Close:
    """The next message or Close, reading as needed; Pings were answered by the core."""
    while True:
        while pending:
            event = pending.pop(0)
            if isinstance(event, TextMessage | BytesMessage | Close):
                return event
        pending.extend(exchange(sock, proto, sock.recv(READ_SIZE)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the echo server")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8765)
    client_parser = commands.add_parser("client", help="send messages to a server")
    client_parser.add_argument("url", help="ws://host:port/path")
    client_parser.add_argument("messages", nargs="*", default=["hello"])
    args = parser.parse_args()
    if args.command == "serve":
        try:
            serve(args.host, args.port)
        except OSError as exc:
            parser.exit(1, f"sansio_echo: cannot listen on {args.host}:{args.port}: {exc}\n")
    else:
        sys.exit(run_client(args.url, args.messages))


if __name__ == "__main__":
    main()
