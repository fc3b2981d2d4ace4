"""The OpenAPI document against the running server: schemathesis generates requests from
``trio_ws/openapi.json`` (valid ones and, in negative mode, ones that break the schema)
and checks every answer: no 5xx, only documented statuses, content types, headers and
bodies matching their schemas, invalid data refused and the key enforced.

The server is ``trio-ws-demo --api-key`` in a subprocess on a free loopback port, stopped
by its PID at the end of the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from .test_api_client import KEY, process
from .test_cli import DEMO, free_port

SCHEMA = schemathesis.openapi.from_path(str(resources.files("trio_ws") / "openapi.json"))


@SCHEMA.auth()
class BearerKey:
    """The key for every operation that requires it (schemathesis also tries without)."""

    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
        return KEY

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = free_port()
    with process([*DEMO, "--port", str(port)], port, env={"TRIO_WS_API_KEY": KEY}):
        yield f"http://127.0.0.1:{port}"


@SCHEMA.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_server_keeps_its_documented_contract(case: schemathesis.Case, base_url: str) -> None:
    case.call_and_validate(base_url=base_url)
