"""The in-memory channel driven by the sandbox's real Jobs engine: the fleet-simulation seam.

No adapter: the engine's `JobsDataPlane` calls satisfy `device_handler.memory.JobsBackend`
as they are. The probe is a real TLS handshake with a local server; the channel is in memory.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device_handler.agent import Agent, AgentSettings, DevicePaths
from device_handler.memory import MemoryConnector
from device_handler.probe import ClientIdentity
from device_handler.testing import TestPki, TlsServer
from device_handler.trust import EndpointConfig
from device_handler.validation import ValidationSettings, make_validator
from infra.sandbox import runtime
from job_documents import Endpoint, Operation, build_document, load_catalog
from job_documents.testing import write_catalog

pytestmark = pytest.mark.e2e

ATS = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
LEGACY = "a1sandbox2demo.iot.us-east-1.amazonaws.com"
DEVICES = 20


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    sandbox = runtime.Sandbox(mqtt=False).start()
    try:
        things = sandbox.provision(DEVICES, [("sim", None)], prefix="sim").things
        yield sandbox, things
    finally:
        sandbox.stop()


def test_simulated_devices_run_the_transaction_against_the_sandbox_engine(
    engine: Any, tmp_path: Path
):
    sandbox, things = engine
    pki = TestPki(tmp_path / "pki", now=dt.datetime.now(dt.UTC))
    legacy_root, ats_root, device_ca = pki.ca("legacy"), pki.ca("ats"), pki.ca("device")
    device = pki.leaf("device-client", device_ca, client=True)
    catalog = write_catalog(tmp_path / "catalog", {"amazon-root-ca-1": ats_root.pem.decode()})
    loaded = load_catalog(catalog)
    document = build_document(
        operation=Operation.MIGRATE,
        region="us-east-1",
        campaign="sim",
        wave="all",
        endpoint=Endpoint(host=ATS),
        roots=[loaded.get("amazon-root-ca-1")],
        catalog=loaded,
    ).text
    group_arn = sandbox.iot_client().describe_thing_group(thingGroupName="sim")["thingGroupArn"]
    sandbox.iot_client().create_job(jobId="sim-migrate", targets=[group_arn], document=document)
    validator = make_validator(ValidationSettings(region="us-east-1", catalog=catalog))
    server = pki.leaf("ats-server", ats_root, hosts=(ATS,))
    with TlsServer(server, client_ca=device_ca.cert_path) as tls:
        overrides = {f"{ATS}:8883": f"127.0.0.1:{tls.port}"}
        for thing in things:
            root = tmp_path / thing
            (root / "state").mkdir(parents=True)
            paths = DevicePaths(root / "endpoint.json", root / "trust.pem", root / "state")
            paths.endpoint_file.write_bytes(EndpointConfig(LEGACY).render())
            paths.trust_bundle.write_bytes(legacy_root.pem)
            agent = Agent(
                AgentSettings(
                    thing_name=thing,
                    paths=paths,
                    identity=ClientIdentity(device.cert_path, device.key_path),
                    overrides=overrides,
                ),
                validator,
                MemoryConnector(sandbox.engine, thing, vias={LEGACY: "legacy", ATS: "ats"}),
            )
            assert agent.poll().status == "SUCCEEDED"
    history = sandbox.engine.execution_history(job_id="sim-migrate")
    assert len(history) == DEVICES
    for execution in history:
        device_updates = [(h["status"], h["via"]) for h in execution["history"]]
        assert device_updates[-1] == ("SUCCEEDED", "ats")
        assert ("IN_PROGRESS", "legacy") in device_updates
    job = sandbox.iot_client().describe_job(jobId="sim-migrate")["job"]
    assert job["jobProcessDetails"]["numberOfSucceededThings"] == DEVICES
