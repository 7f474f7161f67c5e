"""The orchestrator's clock: the system's against AWS, a sandbox's when CA_MIGRATE_CLOCK says so.

The sandbox clock is read from a real sandbox's admin API over HTTP.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from infra.sandbox.runtime import Sandbox
from job_documents.clock import SystemClock
from orchestrator.clock import (
    CLOCK_ENV,
    SandboxClock,
    clock_from_env,
    clock_label,
    clock_note,
    parse_clock_setting,
)
from orchestrator.errors import UsageError


@pytest.fixture
def sandbox():
    with Sandbox(mqtt=False, time_scale=60) as running:
        yield running


def test_without_the_variable_the_clock_is_the_systems() -> None:
    for env in ({}, {CLOCK_ENV: ""}, {CLOCK_ENV: "system"}):
        clock = clock_from_env(None, env)
        assert isinstance(clock, SystemClock)
        assert clock_label(clock) == ""
        assert clock_note(clock) == ""


@pytest.mark.parametrize(
    "value", ["sandbox", "sandbox:", "sandbox:ftp://x/_sandbox", "wall", "http://127.0.0.1:1"]
)
def test_a_value_that_is_not_a_clock_is_refused(value: str) -> None:
    with pytest.raises(UsageError, match=CLOCK_ENV):
        parse_clock_setting(value)


def test_a_sandbox_clock_against_aws_is_refused_and_says_how_to_fix_it() -> None:
    env = {CLOCK_ENV: "sandbox:http://127.0.0.1:45261/_sandbox"}
    with pytest.raises(UsageError, match=f"unset {CLOCK_ENV}"):
        clock_from_env(None, env)


def test_a_sandbox_clock_with_another_control_plane_is_refused(sandbox: Sandbox) -> None:
    env = {CLOCK_ENV: f"sandbox:{sandbox.admin_url}"}
    with pytest.raises(UsageError, match="source the env file"):
        clock_from_env("http://127.0.0.1:1", env)


def test_a_sandbox_that_does_not_answer_is_refused_within_seconds() -> None:
    env = {CLOCK_ENV: "sandbox:http://127.0.0.1:1/_sandbox"}
    started = time.monotonic()
    with pytest.raises(UsageError, match="does not answer"):
        clock_from_env("http://127.0.0.1:1", env)
    assert time.monotonic() - started < 10


def test_the_sandbox_clock_runs_at_the_sandboxs_scale(sandbox: Sandbox) -> None:
    env = {CLOCK_ENV: f"sandbox:{sandbox.admin_url}"}
    clock = clock_from_env(sandbox.control_plane_url, env)
    assert isinstance(clock, SandboxClock)
    assert clock.time_scale == 60
    assert "sandbox time" in clock_label(clock)
    assert "x60" in clock_note(clock)
    first = clock.now()
    assert abs((first - sandbox.engine.clock.now()).total_seconds()) < 30  # 0.5 s real
    time.sleep(0.5)
    moved = (clock.now() - first).total_seconds()
    assert 20 < moved < 120  # 30 sandbox seconds in half a real second, not 0.5
    assert clock.real_seconds(timedelta(minutes=30)) == 30


def test_a_sandbox_clock_that_jumps_is_followed_at_the_next_read(sandbox: Sandbox) -> None:
    clock = SandboxClock(sandbox.admin_url, resync_seconds=0.0)
    before = clock.now()
    sandbox.engine.advance(3600)
    after = clock.now()
    # The manual clock stands still while the client extrapolates between reads, so a slow
    # read may put `before` a few seconds ahead; the jump itself must show in full.
    assert after - before >= timedelta(minutes=59)
    assert after.tzinfo is UTC or after.utcoffset() == timedelta(0)


def test_the_sandbox_clock_never_goes_back(sandbox: Sandbox) -> None:
    clock = SandboxClock(sandbox.admin_url, resync_seconds=0.0)
    readings = [clock.now() for _ in range(50)]
    assert readings == sorted(readings)
    assert all(isinstance(r, datetime) for r in readings)
