"""Fixtures of the end-to-end tests: a provisioned sandbox, the CLI fork server's lifetime."""

from __future__ import annotations

from collections.abc import Iterator

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
