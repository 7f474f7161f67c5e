"""Fixtures of the end-to-end tests: a provisioned sandbox, the CLI fork server's lifetime,
moto's KMS as an HTTP server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from infra.sandbox import runtime

from .campaign_kit import GROUPS, THINGS
from .cli_faults import stop_cli_forkserver


@pytest.fixture(autouse=True, scope="module")
def _cli_forkserver() -> Iterator[None]:
    """The fork server `cli` uses lives as long as this module's tests."""
    yield
    stop_cli_forkserver()


@pytest.fixture
def sandbox(request) -> Iterator[object]:
    """A sandbox (no MQTT) with the campaign tests' things and groups; `param`: throttle rate."""
    throttle = getattr(request, "param", 0.0)
    with runtime.Sandbox(mqtt=False) as sb:
        sb.provision(len(THINGS), GROUPS)
        if throttle:
            sb.faults.update(throttle_rate=throttle)
        yield sb


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def kms_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's KMS as an HTTP server on 127.0.0.1; yields a boto3 KMS client of it."""
    server_module = pytest.importorskip("moto.server", reason="moto[server] (flask) not installed")
    port = _free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sandbox")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sandbox")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    try:
        yield boto3.client("kms", region_name="us-east-1", endpoint_url=url)
    finally:
        server.stop()
