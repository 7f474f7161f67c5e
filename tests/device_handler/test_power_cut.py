"""A power cut before every file operation of migrate, restore and prune, then recovery.

Each scenario first runs once with a recording file layer to enumerate its
mutating file operations (journal writes included, so every persisted step
is covered, and a new step is covered automatically). Then, for every
operation N, a fresh copy of the device runs the job with the power cut
before operation N (unsynced writes lost), and a new agent boots, recovers
and keeps polling. Every case must end in the old or the new configuration,
complete, with a job status that matches it, and a real mutual-TLS handshake
must succeed with the live endpoint and bundle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from device_handler.errors import PowerCut
from device_handler.testing import CrashingFileOps
from device_handler.transaction import Phase
from device_handler.trust import EndpointConfig

from .conftest import THING, Device, World, fingerprint, make_device, migrate_doc

Scenario = tuple[Callable[[Device], None], Callable[[World], str]]


def _migrated(device: Device) -> None:
    device.jobs.add_job(THING, "setup", migrate_doc(device.world))
    assert device.agent().poll().status == "SUCCEEDED"


SCENARIOS: dict[str, Scenario] = {
    "migrate": (lambda _device: None, migrate_doc),
    "migrate-replace-trust": (lambda _device: None, lambda w: migrate_doc(w, keep_existing=False)),
    "restore": (_migrated, lambda _w: json.dumps({"operation": "restore"})),
    "prune": (
        _migrated,
        lambda w: json.dumps({"operation": "prune", "remove": [fingerprint(w.legacy_root)]}),
    ),
    # A device that runs AWS IoT Device Client: its config's endpoint is a third file of the
    # transaction. Without keepExisting a Device Client left on the old endpoint is lost.
    "migrate-replace-trust-device-client": (
        lambda _device: None,
        lambda w: migrate_doc(w, keep_existing=False),
    ),
    "restore-device-client": (_migrated, lambda _w: json.dumps({"operation": "restore"})),
}


def _has_device_client(scenario: str) -> bool:
    return scenario.endswith("-device-client")


def _settle(device: Device) -> None:
    """Boot a fresh agent (real file operations) and let it finish what is pending."""
    agent = device.agent()
    agent.recover()
    for _ in range(6):
        if agent.poll().status == "NONE" and agent.read_journal().phase is Phase.IDLE:
            return
    pytest.fail(f"agent did not settle: {agent.read_journal()}")


@pytest.fixture(scope="module")
def prepared(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, object]]:
    """Per scenario: the device before the job, the live files before and after, the op list."""
    out: dict[str, dict[str, object]] = {}
    for name, (setup, document) in SCENARIOS.items():
        base = tmp_path_factory.mktemp(f"pc-{name}")
        template = make_device(world, base / "template", device_client=_has_device_client(name))
        setup(template)
        reference = template.copy(base / "reference")
        before = reference.live()
        reference.jobs.add_job(THING, "job", document(world))
        recorder = CrashingFileOps()
        outcome = reference.agent(fs=recorder).poll()
        assert outcome.status == "SUCCEEDED", outcome
        out[name] = {
            "template": template,
            "before": before,
            "after": reference.live(),
            "ops": list(recorder.ops),
            "document": document(world),
        }
        assert before != reference.live()
        if _has_device_client(name):
            # The Device Client config follows the endpoint file, before and after.
            assert len(before) == 3
            assert reference.device_client_endpoint() == json.loads(reference.live()[0])["host"]
    return out


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_scenario_has_fewer_operations_than_the_enumeration_covers(
    prepared: dict[str, dict[str, object]], scenario: str
):
    ops = prepared[scenario]["ops"]
    assert isinstance(ops, list)
    assert 20 < len(ops) < 200
    kinds = {kind for kind, _ in ops}
    assert {"write", "fsync", "rename", "fsync_dir"} <= kinds
    if _has_device_client(scenario):
        # Staged, committed and (in the enumeration) rolled back like the other two files.
        assert ("write", "aws-iot-device-client.conf.staged") in ops
        assert ("rename", "aws-iot-device-client.conf") in ops
        assert ("fsync_dir", "dc") in ops


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_power_cut_before_any_file_operation_ends_old_or_new_and_connectable(
    prepared: dict[str, dict[str, object]], scenario: str, tmp_path: Path
):
    info = prepared[scenario]
    template = info["template"]
    ops = info["ops"]
    assert isinstance(template, Device)
    assert isinstance(ops, list)
    endings: dict[str, int] = {"old": 0, "new": 0}
    for index in range(len(ops)):
        device = template.copy(tmp_path / f"cut-{index}")
        device.jobs.add_job(THING, "job", str(info["document"]))
        with pytest.raises(PowerCut):
            device.agent(fs=CrashingFileOps(crash_at=index)).poll()
        _settle(device)
        live = device.live()
        status = device.jobs.execution(THING, "job").status
        where = f"power cut before op {index} {ops[index]}"
        if live == info["before"]:
            endings["old"] += 1
            assert status == "FAILED", where
        else:
            endings["new"] += 1
            assert live == info["after"], where
            assert status == "SUCCEEDED", where
        assert not device.paths.staged_bundle.exists(), where
        assert not device.paths.staged_endpoint.exists(), where
        if device.paths.staged_device_client is not None:
            assert not device.paths.staged_device_client.exists(), where
            assert device.device_client_endpoint() == json.loads(live[0])["host"], where
        endpoint = EndpointConfig.parse(live[0])
        device.world.handshake(endpoint, device.paths.trust_bundle)
    assert endings["old"] > 0
    assert endings["new"] > 0


@pytest.mark.parametrize("scenario", ["migrate", "migrate-replace-trust-device-client"])
def test_power_cut_during_recovery_still_ends_old_or_new(
    prepared: dict[str, dict[str, object]], tmp_path: Path, scenario: str
):
    """A second power cut before any file operation of the recovery itself.

    The first cut is placed before each rename (where the on-disk state changes:
    journal phases, live files, snapshots); the second before every file
    operation the recovery from that point performs.
    """
    info = prepared[scenario]
    template = info["template"]
    ops = info["ops"]
    assert isinstance(template, Device)
    assert isinstance(ops, list)
    # The Device Client variant repeats only the cuts from the commit on, where its third
    # file is written, restored or renamed; before that it is the migrate case above.
    start = 0 if scenario == "migrate" else ops.index(("rename", "rollback.json"))
    cases = 0
    for index in [i for i, (kind, _) in enumerate(ops) if kind == "rename" and i >= start]:
        probe_device = template.copy(tmp_path / f"count-{index}")
        probe_device.jobs.add_job(THING, "job", str(info["document"]))
        with pytest.raises(PowerCut):
            probe_device.agent(fs=CrashingFileOps(crash_at=index)).poll()
        recorder = CrashingFileOps()
        probe_device.agent(fs=recorder).recover()
        for second in range(len(recorder.ops)):
            device = template.copy(tmp_path / f"cut-{index}-{second}")
            device.jobs.add_job(THING, "job", str(info["document"]))
            with pytest.raises(PowerCut):
                device.agent(fs=CrashingFileOps(crash_at=index)).poll()
            with pytest.raises(PowerCut):
                device.agent(fs=CrashingFileOps(crash_at=second)).recover()
            _settle(device)
            live = device.live()
            where = f"cut before op {index} {ops[index]}, then before recovery op {second}"
            assert live in (info["before"], info["after"]), where
            status = device.jobs.execution(THING, "job").status
            assert status == ("FAILED" if live == info["before"] else "SUCCEEDED"), where
            device.world.handshake(EndpointConfig.parse(live[0]), device.paths.trust_bundle)
            cases += 1
    assert cases > 20
