"""A campaign with `endpoint_port: 443` to COMPLETED on the sandbox's MQTT data plane.

Simulated devices run the real agent with the AWS IoT Device SDK v2; their documents say
ATS:443 with ALPN x-amzn-mqtt-ca, which only the sandbox's ALPN listener serves: a device
that connected without the ALPN, or on 8883, would be refused or report via another port.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.aws.iot import IotJobsAdapter
from orchestrator.model import CampaignStatus
from orchestrator.reconcile import Reconciler
from orchestrator.spec import parse_spec
from orchestrator.store.sqlite import SqliteStateStore
from tests.machine import NEEDS_MOSQUITTO, NEEDS_NSS_WRAPPER

from .campaign_kit import RETRIES, drive

runtime = pytest.importorskip("infra.sandbox.runtime")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.mqtt,
    NEEDS_MOSQUITTO,
    NEEDS_NSS_WRAPPER,
]

DEVICES = 4


def test_a_port_443_campaign_completes_with_devices_on_the_alpn_listener(tmp_path: Path) -> None:
    from infra.sandbox.fleet.mqtt import MqttFleet
    from infra.sandbox.fleet.profiles import Profile

    scale = 60.0
    with runtime.Sandbox(mqtt=True, time_scale=scale, work_dir=tmp_path / "sandbox") as sandbox:
        provisioned = sandbox.provision(DEVICES, [("canary", DEVICES)])
        ats = sandbox.endpoints["ats"]
        assert ats.alpn_port
        fleet = MqttFleet(
            sandbox.pki,
            dict.fromkeys(provisioned.credentials, Profile.OK),
            ports={kind: endpoint.port for kind, endpoint in sandbox.endpoints.items()},
            alpn_ports={"ats": ats.alpn_port},
            credentials=provisioned.credentials,
            clock=sandbox.engine.clock,
            time_scale=scale,
            root=tmp_path / "devices",
        )
        with fleet:
            assert fleet.wait_booted(60) == DEVICES
            text = f"""\
name: port-443
region: us-east-1
endpoint: auto
endpoint_port: 443
catalog: {sandbox.pki.ats_catalog}
trust: {{add: [amazon-root-ca-1]}}
waves:
  - name: canary
    thing_groups: [canary]
    gate: {{min_success_rate: 0.5, min_completed_fraction: 1.0, confidence: 0.6}}
"""
            api = IotJobsAdapter(sandbox.iot_client(config=RETRIES))
            rec = Reconciler(SqliteStateStore(tmp_path / "state.sqlite"), api, sandbox.engine.clock)
            rec.start(parse_spec(text), text, None)
            state = drive(rec, "port-443", steps=600)
            assert state.status is CampaignStatus.COMPLETED, state
            assert state.wave("canary").counts.succeeded == DEVICES
        for thing in provisioned.credentials:
            endpoint: dict[str, Any] = json.loads(
                (tmp_path / "devices" / thing / "endpoint.json").read_text()
            )
            assert endpoint == {"host": ats.host, "port": 443, "alpn": ["x-amzn-mqtt-ca"]}
        job_id = state.wave("canary").job_id
        for execution in sandbox.engine.execution_history(job_id=job_id):
            last = [h["via"] for h in execution["history"] if h["via"] != "service"][-1]
            assert last == "ats"
