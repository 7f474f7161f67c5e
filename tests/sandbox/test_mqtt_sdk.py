"""The official AWS IoT Device SDK v2, unmodified, against the sandbox (real engine, boto3 jobs)."""

import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.sandbox import runtime
from infra.sandbox.mqtt.sdkdevice import SdkDeviceError, SdkJobsDevice
from infra.sandbox.mqtt.testing import names_unresolved

pytestmark = pytest.mark.mqtt


def skip_unless_names_resolve(plane):
    reason = names_unresolved(plane)
    if reason is not None:
        pytest.skip(reason)


# s2n (the SDK's TLS) waits 10-30 s ("blinding") before it reports a failed
# handshake; the legacy-trust attempt below runs in the background meanwhile.
BLINDING_WAIT = 45.0


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    with runtime.Sandbox() as sandbox:
        skip_unless_names_resolve(sandbox._data_plane)
        yield sandbox


@pytest.fixture(scope="module")
def iot(sandbox: Any) -> Any:
    return sandbox.iot_client()


@pytest.fixture(scope="module")
def things(sandbox: Any) -> dict[str, dict[str, str]]:
    return dict(sandbox.provision(things=7).credentials)


def sdk_device(
    sandbox: Any, creds: dict[str, str], thing: str, kind: str, ca: Path, **kwargs: Any
) -> SdkJobsDevice:
    endpoint = sandbox.endpoints[kind]
    return SdkJobsDevice(
        thing_name=thing,
        host=endpoint.host,
        port=endpoint.port,
        cert_pem=Path(creds["cert_pem"]),
        key_pem=Path(creds["key_pem"]),
        ca_pem=ca,
        **kwargs,
    )


@pytest.fixture(scope="module", autouse=True)
def legacy_trust_on_ats(
    sandbox: Any, things: dict[str, dict[str, str]]
) -> Iterator[dict[str, Any]]:
    """Start, in the background, an SDK device that trusts only the legacy root, on ATS."""
    thing = max(things)
    device = sdk_device(
        sandbox, things[thing], thing, "ats", sandbox.pki.legacy_root_pem, timeout=BLINDING_WAIT
    )
    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            device.start()
            outcome["connected"] = True
        except SdkDeviceError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    outcome["thread"] = worker
    yield outcome
    worker.join(BLINDING_WAIT)
    device.stop()


def admin(sandbox: Any, path: str) -> Any:
    with urllib.request.urlopen(sandbox.admin_url + path, timeout=10) as response:  # noqa: S310 - loopback http
        return json.loads(response.read())


@pytest.mark.parametrize(
    ("index", "protocol", "kind"),
    [(0, "mqtt5", "ats"), (1, "mqtt311", "ats"), (2, "mqtt5", "legacy"), (3, "mqtt311", "legacy")],
)
def test_sdk_device_completes_a_boto3_job(sandbox, iot, things, index, protocol, kind):
    thing = sorted(things)[index]
    root = (
        sandbox.pki.ats_root_pems["amazon-root-ca-1"]
        if kind == "ats"
        else sandbox.pki.legacy_root_pem
    )
    device = sdk_device(sandbox, things[thing], thing, kind, root, protocol=protocol, timeout=10)
    device.start()
    try:
        arn = iot.describe_thing(thingName=thing)["thingArn"]
        job_id = f"sdk-{protocol}-{kind}"
        iot.create_job(jobId=job_id, targets=[arn], document=json.dumps({"step": index}))
        assert device.run_one("SUCCEEDED") == job_id
    finally:
        device.stop()
    execution = iot.describe_job_execution(jobId=job_id, thingName=thing)["execution"]
    assert execution["status"] == "SUCCEEDED"
    (history,) = admin(sandbox, f"/executions?jobId={job_id}")["executions"]
    assert [(h["status"], h["via"]) for h in history["history"]][-2:] == [
        ("IN_PROGRESS", kind),
        ("SUCCEEDED", kind),
    ]
    job = iot.describe_job(jobId=job_id)["job"]
    assert job["jobProcessDetails"]["numberOfSucceededThings"] == 1


def test_sdk_device_that_trusts_only_the_legacy_root_connects_to_legacy(sandbox, things):
    thing = sorted(things)[4]
    device = sdk_device(sandbox, things[thing], thing, "legacy", sandbox.pki.legacy_root_pem)
    try:
        device.start()
    finally:
        device.stop()


@pytest.mark.slow
def test_sdk_device_that_trusts_only_the_legacy_root_fails_its_handshake_on_ats(
    legacy_trust_on_ats,
):
    legacy_trust_on_ats["thread"].join(BLINDING_WAIT)
    assert "connected" not in legacy_trust_on_ats
    error = legacy_trust_on_ats.get("error")
    assert error is not None, "the attempt did not end"
    assert "TLS" in str(error)


def test_describe_endpoint_names_the_hosts_the_listeners_serve(sandbox, iot):
    ats = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    legacy = iot.describe_endpoint(endpointType="iot:Data")["endpointAddress"]
    assert ats == sandbox.endpoints["ats"].host
    assert legacy == sandbox.endpoints["legacy"].host


def test_sdk_v2_parses_a_version_mismatch_rejection(sandbox, iot, things):
    thing = sorted(things)[5]
    root = sandbox.pki.ats_root_pems["amazon-root-ca-1"]
    device = sdk_device(sandbox, things[thing], thing, "ats", root, timeout=10)
    device.start()
    try:
        arn = iot.describe_thing(thingName=thing)["thingArn"]
        iot.create_job(jobId="sdk-mismatch", targets=[arn], document="{}")
        execution = device.start_next()
        assert execution.job_id == "sdk-mismatch"
        with pytest.raises(SdkDeviceError) as caught:
            device.update(
                "sdk-mismatch", "SUCCEEDED", expected_version=execution.version_number + 5
            )
        rejection = caught.value.__cause__.modeled_error
        assert rejection.code == "VersionMismatch"
        assert rejection.execution_state.status == "IN_PROGRESS"
        assert rejection.execution_state.version_number == execution.version_number
        accepted = device.update(
            "sdk-mismatch", "SUCCEEDED", expected_version=execution.version_number
        )
        assert accepted.execution_state.status == "SUCCEEDED"
    finally:
        device.stop()


def test_sdk_v2_sees_no_thing_name_in_notify_next_and_start_next_as_on_aws(sandbox, iot, things):
    """AWS's own capture (the SDK's jobs sample walkthrough) shows `thing_name=None` and
    `status_details=None` in NextJobExecutionChanged and the start-next response."""
    thing = sorted(things)[6]
    root = sandbox.pki.ats_root_pems["amazon-root-ca-1"]
    device = sdk_device(sandbox, things[thing], thing, "ats", root, timeout=10)
    device.start()
    try:
        arn = iot.describe_thing(thingName=thing)["thingArn"]
        iot.create_job(
            jobId="sdk-fields",
            targets=[arn],
            document=json.dumps({"ToDo": "Reboot"}),
            timeoutConfig={"inProgressTimeoutInMinutes": 5},
        )
        notified = device.next_execution()
        started = device.start_next()
        for execution in (notified, started):
            assert execution.job_id == "sdk-fields"
            assert execution.thing_name is None
            assert execution.status_details is None
            assert execution.job_document == {"ToDo": "Reboot"}
        assert (notified.status, started.status) == ("QUEUED", "IN_PROGRESS")
        assert started.started_at is not None
        device.update("sdk-fields", "SUCCEEDED")
    finally:
        device.stop()


def test_sdk_v2_named_shadow_update_and_get(sandbox, things):
    from awscrt import mqtt_request_response
    from awsiot import iotshadow

    thing = sorted(things)[5]
    root = sandbox.pki.ats_root_pems["amazon-root-ca-1"]
    device = sdk_device(sandbox, things[thing], thing, "ats", root, timeout=10)
    device.start()
    try:
        shadows = iotshadow.IotShadowClientV2(
            device.mqtt5_client,
            mqtt_request_response.ClientOptions(
                max_request_response_subscriptions=4,
                max_streaming_subscriptions=1,
                operation_timeout_in_seconds=10,
            ),
        )
        reported = {"endpoint": sandbox.endpoints["ats"].host, "roots": ["amazon-root-ca-1"]}
        updated = shadows.update_named_shadow(
            iotshadow.UpdateNamedShadowRequest(
                thing_name=thing,
                shadow_name="ca-migration",
                state=iotshadow.ShadowState(reported=reported),
            )
        ).result(10)
        assert updated.version == 1
        assert updated.state.reported == reported
        got = shadows.get_named_shadow(
            iotshadow.GetNamedShadowRequest(thing_name=thing, shadow_name="ca-migration")
        ).result(10)
        assert got.state.reported == reported
        with pytest.raises(Exception) as missing:
            shadows.get_named_shadow(
                iotshadow.GetNamedShadowRequest(thing_name=thing, shadow_name="absent")
            ).result(10)
        assert missing.value.modeled_error.code == 404
    finally:
        device.stop()
    stored = admin(sandbox, f"/shadows/{thing}/ca-migration")["shadow"]
    assert stored["state"]["reported"] == reported
