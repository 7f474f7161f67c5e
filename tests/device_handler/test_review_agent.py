"""Adversarial review of the transaction shell: backups, reports and their limits."""

from __future__ import annotations

import json

from .conftest import THING, Device, migrate_doc


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
