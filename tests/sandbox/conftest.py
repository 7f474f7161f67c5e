"""Fixtures: a sandbox on a manual clock (no MQTT), and boto3 clients that never retry."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from botocore.config import Config

from infra.sandbox.runtime import Sandbox
from job_documents.clock import ManualClock

NO_RETRY = Config(retries={"max_attempts": 1, "mode": "standard"})
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def sandbox(clock: ManualClock) -> Iterator[Sandbox]:
    with Sandbox(mqtt=False, clock=clock) as running:
        yield running


@pytest.fixture
def iot(sandbox: Sandbox):
    return sandbox.iot_client(config=NO_RETRY)


@pytest.fixture
def jobs_data(sandbox: Sandbox):
    return sandbox.jobs_data_client(config=NO_RETRY)


@pytest.fixture
def http_call(sandbox: Sandbox):
    """Call the control-plane port directly: (method, path, body) -> (status, headers, json)."""

    def call(method: str, path: str, body: dict | None = None, *, base: str | None = None):
        parsed = urlsplit(base or sandbox.control_plane_url)
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        try:
            payload = None if body is None else json.dumps(body).encode()
            connection.request(method, path, body=payload)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), json.loads(response.read())
        finally:
            connection.close()

    return call
