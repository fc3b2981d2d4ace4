"""A synchronous client of the server API, for backends: standard library only.

A web application (Django, Flask, a cron job) reaches the WebSocket clients of a trio_ws
cluster without an event loop::

    from trio_ws.api import Client

    api = Client("http://127.0.0.1:8000", "the-api-key")
    seq = api.publish("g1", {"type": "news", "text": "hello"})
    api.send("alice", {"type": "note", "text": "for you"})
    api.disconnect("mallory", code=4003, reason="banned")

Each call is one HTTP request (``Connection: close``) with a timeout; an error answer
raises :class:`ApiError` carrying the status and the error code of docs/server-api.md.
The client is thread-safe: it keeps no connection between calls.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from typing import Any

__all__ = ["ApiError", "Client"]


class ApiError(Exception):
    """The server answered with an error, or could not be reached.

    Attributes:
        status: the HTTP status (0 when no answer came: the server is down or slow).
        code: the error code (``"unauthorized"``, ``"unknown_client"``,
            ``"rate_limited"``, ...; ``"unreachable"`` with status 0).
        message: the server's explanation.
        retry_after: seconds to wait before retrying, when the server said (429, 503).
    """

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class Client:
    """The server API of one trio_ws app (any node of its cluster).

    Args:
        url: the app's base URL, ``http://host:port`` or ``https://host:port`` (the
            WebSocket port; a path prefix is kept, for a server behind a proxy).
        key: the API key the app was started with.
        timeout: seconds for connecting and for each read of an answer.
    """

    def __init__(self, url: str, key: str, *, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, not {url!r}")
        self.url = url
        self._parts = parts
        self._key = key
        self.timeout = timeout

    # ------------------------------------------------------------------ endpoints

    def publish(self, queue: str, data: dict[str, Any] | str, *, key: str | None = None) -> int:
        """Publish ``data`` (a JSON object, or a text) to ``queue`` on every node; return
        its seq.

        Raises:
            ApiError: e.g. ``bad_group`` (400), ``rate_limited`` (429),
                ``broker_unavailable`` (503).
        """
        body: dict[str, Any] = {"queue": queue, "data": data}
        if key is not None:
            body["key"] = key
        return int(self._call("POST", "publish", body)["seq"])

    def publish_many(
        self,
        queue: str,
        messages: list[dict[str, Any] | str],
        *,
        keys: list[str | None] | None = None,
    ) -> list[int]:
        """Publish several messages to ``queue`` in order, in one request and one broker
        round trip; return their seqs (consecutive). All or none are published.

        Raises:
            ApiError: as :meth:`publish`; ``bad_request`` (400) for no messages, more
                than 1,000, or ``keys`` of another length.
        """
        if keys is not None and len(keys) != len(messages):
            raise ValueError(f"{len(keys)} keys for {len(messages)} messages")
        items: list[dict[str, Any]] = []
        for i, data in enumerate(messages):
            item: dict[str, Any] = {"data": data}
            if keys is not None and keys[i] is not None:
                item["key"] = keys[i]
            items.append(item)
        result = self._call("POST", "publish_many", {"queue": queue, "messages": items})
        return [int(seq) for seq in result["seqs"]]

    def send(self, name: str, data: dict[str, Any] | str) -> None:
        """Send ``data`` to the client logged in as ``name``, on whichever node holds it.

        Raises:
            ApiError: ``unknown_client`` (404), ``recipient_busy`` (409), ...
        """
        self._call("POST", "send", {"to": name, "data": data})

    def disconnect(self, name: str, *, code: int = 1000, reason: str = "") -> None:
        """Close the connection of the client logged in as ``name`` with ``code`` (1000 or
        3000-4999) and ``reason``, on whichever node holds it.

        Raises:
            ApiError: ``unknown_client`` (404), ``bad_request`` (400) for a bad code, ...
        """
        self._call("POST", "disconnect", {"name": name, "code": code, "reason": reason})

    def members(self, queue: str) -> list[str]:
        """The sorted names subscribed to ``queue`` on any node."""
        query = urllib.parse.urlencode({"queue": queue})
        return [str(name) for name in self._call("GET", f"members?{query}")["members"]]

    def info(self) -> dict[str, Any]:
        """The cluster as this node sees it: ``node``, ``nodes``, ``connections``,
        ``clients``, ``queues``."""
        info: dict[str, Any] = self._call("GET", "info")
        return info

    # ------------------------------------------------------------------ transport

    def _call(self, method: str, endpoint: str, body: dict[str, Any] | None = None) -> Any:
        parts = self._parts
        conn_type = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_type(parts.hostname or "", parts.port, timeout=self.timeout)
        headers = {"Authorization": f"Bearer {self._key}", "Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        path = f"{parts.path.rstrip('/')}/api/{endpoint}"
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(0, "unreachable", f"{self.url}: {exc}") from exc
        finally:
            conn.close()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if response.status != 200:
            retry = response.getheader("Retry-After")
            retry_after = float(retry) if retry and retry.isdigit() else None
            if isinstance(answer, dict) and isinstance(answer.get("error"), str):
                raise ApiError(
                    response.status, answer["error"], str(answer.get("message", "")), retry_after
                )
            raise ApiError(response.status, "http_error", raw[:200].decode("utf-8", "replace"))
        if not isinstance(answer, dict):
            raise ApiError(response.status, "bad_answer", "the answer is not a JSON object")
        return answer
