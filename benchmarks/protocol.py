"""Sans-IO protocol benchmark: trio_ws against wsproto, same process, same bytes.

What is measured
----------------
Both libraries are sans-IO, so no sockets are involved: each measurement drives one protocol
object directly, in a tight loop, the way a server's receive or send task would.

``parse (server)``
    A stream of N masked client frames is built once per size, then cut into 64 KiB chunks
    (a typical ``recv`` size). The *same* chunks are fed to a server-side wsproto
    ``Connection`` (``receive_data`` + ``events()``) and to a server-side trio_ws
    ``WebSocketProtocol`` (``receive_data`` + ``events_received()`` + ``data_to_send()``, the
    flush the API asks for after every read). Every event is drained and counted. The stream
    ends on a frame boundary, so one run may feed it several times to the same connection.

    wsproto reports a message larger than what has arrived as several partial events
    (``message_finished=False``); trio_ws reassembles and reports it once. Both count as one
    message when it is finished, and both deliver the same payload bytes.

``serialise (server)``
    N messages sent by a server (unmasked): ``wsproto Connection.send(Message(...))`` against
    ``send_text``/``send_bytes`` followed by ``data_to_send()``, one message at a time.

``serialise (client, masked)``
    The same from a client, which masks every frame with a fresh random key (RFC 6455 §5.3),
    so this row includes ``os.urandom(4)`` and the masking of the payload.

Messages up to 1 KiB are text (ASCII), larger ones binary; ``--text``/``--binary`` force one
kind for every size. The last two columns repeat the trio_ws measurement with its
pure-Python frame layer (``_apply_mask_python``, ``_parse_frame_python``,
``_unmask_join_python``) swapped in for the compiled one, so both paths are shown;
server-side serialisation does not mask, so there they only differ by noise.

How long a run is: the first run of each contender does one pass of N messages; it is
discarded, but it calibrates how many passes make a run last about ``--target`` seconds
(0.3 by default) for that contender. The contenders differ by up to an order of magnitude,
so one shared message count would leave the fast one with runs too short to time or the slow
one with runs far too long. Each measurement is then repeated ``--reps`` times (the
contenders take turns inside each repetition) and the median rate is reported; a ratio is
the median of the per-repetition ratios, which pairs runs made seconds apart. The garbage
collector is off while the clock runs.

MB/s counts message payload bytes (10^6 bytes per MB), not frame headers or mask keys.

Usage::

    python benchmarks/protocol.py [--reps 5] [--target 0.3] [--quick]
                                  [--sizes 32,1k,64k,1m] [--text | --binary]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import importlib.metadata
import platform
import random
import statistics
import struct
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial

import wsproto
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage as WsprotoBytes
from wsproto.events import Message as WsprotoMessage
from wsproto.events import TextMessage as WsprotoText

from trio_ws.protocol import _frames
from trio_ws.protocol._connection import WebSocketProtocol
from trio_ws.protocol._events import BytesMessage, TextMessage
from trio_ws.protocol._frames import Role

KIB = 1024
MIB = 1024 * 1024
READ_SIZE = 64 * KIB  # bytes per receive_data() call in the parse benchmark

# N: messages in the pre-built stream, and in one pass of a serialise run, per size. One pass
# takes wsproto a few tenths of a second; at most 16 MiB of payload is held in memory.
# Other sizes get 16 MiB worth, at most 20,000 messages. --quick divides N by 10.
STREAM_MESSAGES = {32: 20_000, 1 * KIB: 4_000, 64 * KIB: 256, 1 * MIB: 16}

# The contenders in every row: (name, whether trio_ws runs with its pure-Python masking).
CONTENDERS = (("wsproto", False), ("trio_ws", False), ("trio_ws/py-mask", True))


# ---------------------------------------------------------------------------------- inputs


def make_payload(size: int, text: bool, seed: int) -> str | bytes:
    """A deterministic ASCII string (text) or random bytes (binary) of ``size`` bytes."""
    rng = random.Random(seed)
    if text:
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;-_"
        return "".join(rng.choices(alphabet, k=size))
    return rng.randbytes(size)


def make_payloads(size: int, text: bool, count: int = 16) -> list[str | bytes]:
    """A few distinct payloads, cycled through, so no message is simply the previous one."""
    return [make_payload(size, text, seed) for seed in range(count)]


def mask_reference(data: bytes, key: bytes) -> bytes:
    """RFC 6455 §5.3 masking, written independently of both libraries (for the input stream)."""
    n = len(data)
    full = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(full, "big")).to_bytes(n, "big")


def client_frame(payload: bytes, text: bool, key: bytes) -> bytes:
    """One final, masked client frame (RFC 6455 §5.2), built without either library."""
    b0 = 0x80 | (0x1 if text else 0x2)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 0x10000:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return head + key + mask_reference(payload, key)


def build_client_stream(payloads: list[str | bytes], n: int) -> list[bytes]:
    """N masked client frames (cycling through ``payloads``), cut into READ_SIZE chunks."""
    rng = random.Random(1234)
    text = isinstance(payloads[0], str)
    encoded = [p.encode() if isinstance(p, str) else p for p in payloads]
    # Mask 64 frames with distinct keys, then repeat them: masking N frames one by one in
    # Python would take longer than the benchmark itself for small messages.
    frames = [client_frame(encoded[i % len(encoded)], text, rng.randbytes(4)) for i in range(64)]
    stream = b"".join(frames[i % len(frames)] for i in range(n))
    return [stream[i : i + READ_SIZE] for i in range(0, len(stream), READ_SIZE)]


# ------------------------------------------------------------------------ parse (server)


def parse_wsproto(chunks: list[bytes], repeat: int) -> int:
    """Feed ``chunks`` ``repeat`` times to one wsproto server; return the messages received."""
    conn = Connection(ConnectionType.SERVER)  # no handshake: starts in the OPEN state
    messages = 0
    for _ in range(repeat):
        for chunk in chunks:
            conn.receive_data(chunk)
            for event in conn.events():
                if event.message_finished:
                    messages += 1
    return messages


def parse_trio_ws(chunks: list[bytes], repeat: int) -> int:
    """Feed ``chunks`` ``repeat`` times to one trio_ws server; return the messages received."""
    proto = WebSocketProtocol(Role.SERVER, max_message_size=None)
    messages = 0
    for _ in range(repeat):
        for chunk in chunks:
            proto.receive_data(chunk)
            proto.data_to_send()  # the flush due after every read (nothing to send here)
            for _event in proto.events_received():
                messages += 1
    return messages


# ----------------------------------------------------------------------------- serialise


def serialise_wsproto(payloads: list[str | bytes], n: int, client: bool, repeat: int) -> int:
    """Send ``n * repeat`` messages, one ``send()`` each; return the messages sent."""
    conn = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
    send = conn.send
    k = len(payloads)
    written = 0
    # Building the event is part of wsproto's sending API, as the method call is for trio_ws.
    for i in range(n * repeat):
        written += len(send(WsprotoMessage(data=payloads[i % k])))
    assert written
    return n * repeat


def serialise_trio_ws(payloads: list[str | bytes], n: int, client: bool, repeat: int) -> int:
    """Send ``n * repeat`` messages, each followed by ``data_to_send()``; return the count."""
    proto = WebSocketProtocol(Role.CLIENT if client else Role.SERVER, max_message_size=None)
    send = proto.send_text if isinstance(payloads[0], str) else proto.send_bytes
    data_to_send = proto.data_to_send
    k = len(payloads)
    written = 0
    for i in range(n * repeat):
        send(payloads[i % k])  # type: ignore[arg-type]
        written += len(data_to_send())
    assert written
    return n * repeat


# ------------------------------------------------------------------------ masking switch


@contextlib.contextmanager
def python_masking() -> Iterator[None]:
    """Make trio_ws use its pure-Python frame layer (masking, the frame parser, the join of
    a large frame's chunks) for the duration of the block.

    ``FrameParser`` and ``encode_frame`` look these up as globals of
    ``trio_ws.protocol._frames`` at call time, so replacing those globals is enough. Any
    other trio_ws module that imported a name directly is patched too, to be safe.
    """
    pure = {
        "apply_mask": _frames._apply_mask_python,
        "parse_frame": _frames._parse_frame_python,
        "unmask_join": _frames._unmask_join_python,
    }
    saved: list[tuple[object, str, object]] = []
    for name, python in pure.items():
        compiled = getattr(_frames, name)
        for mod_name, module in list(sys.modules.items()):
            if mod_name.startswith("trio_ws") and getattr(module, name, None) is compiled:
                saved.append((module, name, compiled))
                setattr(module, name, python)
    try:
        yield
    finally:
        for module, name, compiled in saved:
            setattr(module, name, compiled)


# ---------------------------------------------------------------------------- correctness


def digest_trio_ws(chunks: list[bytes]) -> tuple[int, int, str]:
    """(messages, payload bytes, SHA-256 of the payloads) as a trio_ws server parses them."""
    proto = WebSocketProtocol(Role.SERVER, max_message_size=None)
    count = size = 0
    h = hashlib.sha256()
    for chunk in chunks:
        proto.receive_data(chunk)
        for event in proto.events_received():
            assert isinstance(event, TextMessage | BytesMessage), event
            data = event.data.encode() if isinstance(event, TextMessage) else event.data
            count += 1
            size += len(data)
            h.update(data)
    return count, size, h.hexdigest()


def digest_wsproto(chunks: list[bytes]) -> tuple[int, int, str]:
    """The same as :func:`digest_trio_ws`, with a wsproto server (partial events included)."""
    conn = Connection(ConnectionType.SERVER)
    count = size = 0
    h = hashlib.sha256()
    for chunk in chunks:
        conn.receive_data(chunk)
        for event in conn.events():
            assert isinstance(event, WsprotoText | WsprotoBytes), event
            data = event.data.encode() if isinstance(event, WsprotoText) else bytes(event.data)
            count += event.message_finished
            size += len(data)
            h.update(data)
    return count, size, h.hexdigest()


def wsproto_output(payloads: list[str | bytes], n: int, client: bool) -> bytes:
    """What :func:`serialise_wsproto` writes for ``n`` messages."""
    conn = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
    return b"".join(conn.send(WsprotoMessage(data=payloads[i % len(payloads)])) for i in range(n))


def trio_ws_output(payloads: list[str | bytes], n: int, client: bool) -> bytes:
    """What :func:`serialise_trio_ws` writes for ``n`` messages."""
    proto = WebSocketProtocol(Role.CLIENT if client else Role.SERVER, max_message_size=None)
    out = []
    for i in range(n):
        payload = payloads[i % len(payloads)]
        if isinstance(payload, str):
            proto.send_text(payload)
        else:
            proto.send_bytes(payload)
        out.append(proto.data_to_send())
    return b"".join(out)


def verify(chunks: list[bytes], payloads: list[str | bytes], n: int) -> None:
    """Check once, untimed, that both libraries agree on what they parse and produce."""
    size = len(payloads[0].encode() if isinstance(payloads[0], str) else payloads[0])
    reference = digest_wsproto(chunks)
    assert reference[:2] == (n, n * size), (reference, n, size)
    assert digest_trio_ws(chunks) == reference
    with python_masking():
        assert digest_trio_ws(chunks) == reference
    # The timed functions themselves, including a second pass over the same connection.
    assert parse_wsproto(chunks, 2) == parse_trio_ws(chunks, 2) == 2 * n

    m = min(n, 256)  # a few hundred messages are enough to compare the serialisers
    # Server frames are unmasked, hence byte-for-byte identical between the libraries.
    assert trio_ws_output(payloads, m, client=False) == wsproto_output(payloads, m, client=False)
    # Client frames carry random mask keys: parse them back and compare the messages.
    expected = digest_wsproto([wsproto_output(payloads, m, client=True)])
    assert expected[:2] == (m, m * size)
    assert digest_wsproto([trio_ws_output(payloads, m, client=True)]) == expected
    with python_masking():
        assert digest_wsproto([trio_ws_output(payloads, m, client=True)]) == expected


# -------------------------------------------------------------------------------- timing


def timed(fn: Callable[[int], int], repeat: int) -> tuple[int, float]:
    """Run ``fn(repeat)`` with the garbage collector off: (messages, seconds)."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        messages = fn(repeat)
        return messages, time.perf_counter() - start
    finally:
        gc.enable()


def measure(
    runs: dict[str, Callable[[int], int]], reps: int, target: float
) -> dict[str, list[float]]:
    """Messages per second of each contender, one value per repetition.

    ``runs[name](repeat)`` does ``repeat`` passes of N messages and returns how many it did.
    """
    repeat: dict[str, int] = {}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(reps + 1):
        for name, py_mask in CONTENDERS:
            with python_masking() if py_mask else contextlib.nullcontext():
                messages, seconds = timed(runs[name], repeat.get(name, 1))
            if rep == 0:  # warm-up: discarded, but tells how many passes fill ``target``
                repeat[name] = max(1, round(target / seconds))
            else:
                rates[name].append(messages / seconds)
    return rates


def paired_ratio(rates: dict[str, list[float]], name: str) -> float:
    """Median over repetitions of ``name``'s rate / wsproto's rate in the same repetition.

    Runs of one repetition are seconds apart, so pairing them cancels most of the drift a
    shared machine adds (frequency changes, busy neighbours) better than a ratio of medians.
    """
    return statistics.median(x / y for x, y in zip(rates[name], rates["wsproto"], strict=True))


def bench_size(
    size: int, text: bool, n: int, reps: int, target: float
) -> list[tuple[str, dict[str, list[float]]]]:
    """Verify, then time every direction for one message size: (direction, rates) rows."""
    payloads = make_payloads(size, text)
    chunks = build_client_stream(payloads, n)
    verify(chunks, payloads, n)
    parse = {"wsproto": partial(parse_wsproto, chunks)}
    parse["trio_ws"] = parse["trio_ws/py-mask"] = partial(parse_trio_ws, chunks)
    rows = [("parse (server)", measure(parse, reps, target))]
    for client, direction in ((False, "serialise (server)"), (True, "serialise (client, masked)")):
        send = {"wsproto": partial(serialise_wsproto, payloads, n, client)}
        send["trio_ws"] = send["trio_ws/py-mask"] = partial(serialise_trio_ws, payloads, n, client)
        rows.append((direction, measure(send, reps, target)))
    return rows


# -------------------------------------------------------------------------------- output


def parse_size(text: str) -> int:
    """``32``, ``1k``, ``64KiB``, ``1m`` -> bytes."""
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    for suffix, factor in (("k", KIB), ("m", MIB)):
        if text.endswith(suffix):
            return int(text[:-1]) * factor
    return int(text)


def size_label(size: int) -> str:
    if size >= MIB and size % MIB == 0:
        return f"{size // MIB} MiB"
    if size >= KIB and size % KIB == 0:
        return f"{size // KIB} KiB"
    return f"{size} B"


def rate(value: float) -> str:
    """A rate with thousands separators and no excess precision."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def header_line() -> str:
    speedups = "built" if _frames.HAS_SPEEDUPS else "NOT built (pure-Python masking)"
    return (
        f"trio_ws {importlib.metadata.version('trio_ws')} (speedups {speedups}), "
        f"wsproto {wsproto.__version__}, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()} {platform.system()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=5, help="timed runs per cell (median shown)")
    parser.add_argument("--target", type=float, default=0.3, help="seconds per timed run")
    parser.add_argument("--quick", action="store_true", help="N/10 and 0.03 s runs (smoke test)")
    parser.add_argument("--sizes", default="32,1k,64k,1m", help="message sizes, e.g. 32,1k,64k,1m")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--text", action="store_true", help="text messages for every size")
    kind.add_argument("--binary", action="store_true", help="binary messages for every size")
    args = parser.parse_args()

    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    target = 0.03 if args.quick else args.target
    started = time.perf_counter()
    print(header_line())
    print(
        f"median of {args.reps} runs of ~{target:g} s per cell; reads of {READ_SIZE // KIB} KiB; "
        "MB = 10^6 payload bytes; ratio = trio_ws / wsproto (median of per-rep ratios); "
        "py-mask = trio_ws with its pure-Python frame layer (masking, parser)"
    )
    print()
    print(
        "| size | direction | trio_ws msg/s | trio_ws MB/s | wsproto msg/s | wsproto MB/s | ratio "
        "| trio_ws py-mask msg/s | py-mask ratio |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for size in sizes:
        text = args.text or (not args.binary and size <= KIB)
        n = STREAM_MESSAGES.get(size) or max(1, min(20_000, 16 * MIB // size))
        if args.quick:
            n = max(1, n // 10)
        label = f"{size_label(size)} {'text' if text else 'binary'}"
        for direction, rates in bench_size(size, text, n, args.reps, target):
            ws, tw, py = (statistics.median(rates[name]) for name, _ in CONTENDERS)
            print(
                f"| {label} | {direction} "
                f"| {rate(tw)} | {rate(tw * size / 1e6)} "
                f"| {rate(ws)} | {rate(ws * size / 1e6)} "
                f"| {paired_ratio(rates, 'trio_ws'):.2f}x "
                f"| {rate(py)} | {paired_ratio(rates, 'trio_ws/py-mask'):.2f}x |",
                flush=True,
            )
    print()
    print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
