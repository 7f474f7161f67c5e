from __future__ import annotations

import pytest

from orchestrator.cli import campaign
from orchestrator.errors import LeaseHeldError


def test_operator_commands_wait_for_a_short_reconcile_then_give_up(monkeypatch) -> None:
    monkeypatch.setattr(campaign, "LEASE_WAIT_SECONDS", 0)
    attempts = []

    def busy_twice():
        attempts.append(1)
        if len(attempts) <= 2:
            raise LeaseHeldError("busy")
        return "done"

    assert campaign._waiting_for_the_lease(busy_twice) == "done"
    assert len(attempts) == 3

    def always_busy():
        raise LeaseHeldError("busy")

    with pytest.raises(LeaseHeldError):
        campaign._waiting_for_the_lease(always_busy)
