"""Adversarial review of the transaction shell: backups, reports and their limits."""

from __future__ import annotations

import json
import unicodedata

import pytest

from device_handler.status import details

from .conftest import THING, Device, fingerprint, migrate_doc


def _poll(device: Device, job_id: str, document: str) -> str:
    device.jobs.add_job(THING, job_id, document)
    agent = device.agent()
    agent.recover()
    return agent.poll().status


def test_a_repeated_migrate_keeps_the_backup_so_restore_still_reaches_the_original(
    device: Device,
):
    """A migrate that changes nothing must not replace previous.json with the live config."""
    original = device.live()
    assert _poll(device, "job-1", migrate_doc(device.world)) == "SUCCEEDED"
    migrated = device.live()
    assert _poll(device, "job-2", migrate_doc(device.world)) == "SUCCEEDED"
    assert device.live() == migrated
    assert device.jobs.execution(THING, "job-2").status_details["step"] == "nothing-to-do"
    assert _poll(device, "job-3", json.dumps({"operation": "restore"})) == "SUCCEEDED"
    assert device.live() == original


@pytest.mark.parametrize(
    "char",
    [
        "\u200b",  # zero width space (Cf)
        "\u202e",  # right-to-left override (Cf)
        "\ufeff",  # byte order mark (Cf)
        "\ue000",  # private use (Co)
        "\ud800",  # unpaired surrogate (Cs)
        "\u0378",  # unassigned (Cn)
        "\x85",  # next line (Cc)
    ],
)
def test_status_details_values_hold_no_character_aws_refuses(char: str):
    """AWS IoT Jobs takes values matching [^\\p{C}]+: no Cc, Cf, Cs, Co or Cn character."""
    out = details({"message": f"tls error{char}here", "reason": char})
    assert all(not unicodedata.category(c).startswith("C") for v in out.values() for c in v)
    assert out["message"].startswith("tls error")


def test_a_second_restore_does_not_move_the_device_back_to_the_migrated_configuration(
    device: Device,
):
    """Restore goes back to what the last migrate backed up; run twice, it must not re-migrate.

    (A rollback of one wave, then of the whole campaign, sends a restore twice.)
    """
    original = device.live()
    assert _poll(device, "job-1", migrate_doc(device.world)) == "SUCCEEDED"
    assert _poll(device, "job-2", json.dumps({"operation": "restore"})) == "SUCCEEDED"
    assert device.live() == original
    assert _poll(device, "job-3", json.dumps({"operation": "restore"})) == "SUCCEEDED"
    assert device.live() == original


def test_restore_after_a_prune_goes_back_to_the_configuration_before_the_migrate(
    device: Device,
):
    """The contract: restore returns to the endpoint and trust backed up before the last migrate."""
    world = device.world
    original = device.live()
    assert _poll(device, "job-1", migrate_doc(world)) == "SUCCEEDED"
    prune = {"operation": "prune", "remove": [fingerprint(world.legacy_root)]}
    assert _poll(device, "job-2", json.dumps(prune)) == "SUCCEEDED"
    assert _poll(device, "job-3", json.dumps({"operation": "restore"})) == "SUCCEEDED"
    assert device.live() == original
