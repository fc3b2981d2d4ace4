"""A backend in another process publishing to a trio_ws app through its server API.

A plain WSGI application (the standard library's ``wsgiref``, no framework) serves a form;
each post is published to a group of the demo with :class:`trio_ws.api.Client`, so every
page that joined the group sees it at once. Run the demo with a key, then this::

    TRIO_WS_API_KEY=K trio-ws-demo
    TRIO_WS_API_KEY=K python demos/backend_form.py    # http://127.0.0.1:8080/

(``--api-key K`` works too, but shows the key in ``ps``.) Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import html
import os
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import make_server

from trio_ws.api import ApiError, Client

MAX_FORM_SIZE = 16 * 1024  # a form post larger than this is refused unread (413)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Publish to trio_ws</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>Publish to a group</h1>{notice}
<form method="post" action="/">
<label>Group <input name="group" value="{group}" required></label>
<label>Text <input name="text" required autofocus></label>
<button>Publish</button></form></body></html>
"""

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def backend(api: Client) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI application: ``GET /`` the form, ``POST /`` publish what was posted."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        def page(status: str, notice: str = "", group: str = "lobby") -> list[bytes]:
            body = PAGE.format(notice=notice, group=html.escape(group)).encode()
            start_response(
                status,
                [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
            )
            return [body]

        if environ.get("PATH_INFO", "/") != "/":
            return page("404 Not Found", "<p>Nothing here.</p>")
        if environ["REQUEST_METHOD"] == "GET":
            return page("200 OK")
        if environ["REQUEST_METHOD"] != "POST":
            return page("405 Method Not Allowed", "<p>GET or POST only.</p>")
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            size = -1
        if not 0 <= size <= MAX_FORM_SIZE:
            return page("413 Content Too Large", "<p>That post is too large.</p>")
        form = urllib.parse.parse_qs(environ["wsgi.input"].read(size).decode("utf-8", "replace"))
        group = form.get("group", [""])[0].strip()
        text = form.get("text", [""])[0]
        if not group or not text:
            return page("400 Bad Request", "<p>Give a group and a text.</p>", group or "lobby")
        message = {"type": "grouped", "group": group, "from": "backend", "text": text}
        try:
            seq = api.publish(group, message)
        except ApiError as exc:
            notice = f"<p>Not published: {html.escape(exc.code)} ({html.escape(exc.message)})</p>"
            return page("502 Bad Gateway", notice, group)
        return page("200 OK", f"<p>Published as seq {seq}.</p>", group)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--server", default="http://127.0.0.1:8000", help="the trio_ws app")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("TRIO_WS_API_KEY"),
        help="the app's API key (default: $TRIO_WS_API_KEY)",
    )
    args = parser.parse_args()
    if not args.api_key:
        parser.error("give the app's API key: --api-key K or TRIO_WS_API_KEY=K")
    with make_server(args.host, args.port, backend(Client(args.server, args.api_key))) as httpd:
        print(f"backend_form: http://{args.host}:{args.port}/ -> {args.server}", flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
