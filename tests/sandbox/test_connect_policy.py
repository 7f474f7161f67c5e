"""`--connect-policy any-client-id`: the SDK samples' policy (iot:Connect on client/*).

The stock SDK v2 samples send no client id (the server assigns one) or a random
one; the project's device policy refuses them. Under `any-client-id` they
connect when their certificate is registered, ACTIVE and attached to exactly one
thing, and use that thing's topics only: the TLS front hands the broker the
CONNECT with the thing's name as client id.
"""

from __future__ import annotations

import json
import queue
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from infra.sandbox.engine import ConnectionRefusedByPolicyError, ConnectPolicy
from infra.sandbox.mqtt._front import parse_connect, with_client_id
from infra.sandbox.mqtt.testing import names_unresolved
from infra.sandbox.runtime import Sandbox

WAIT = 10.0


def _connect(client_id: bytes, *, level: int, tail: bytes = b"", flags: int = 0x02) -> bytes:
    header = b"\x00\x04MQTT" + bytes((level, flags)) + b"\x00\x3c"
    if level == 5:
        header += b"\x05\x11\x00\x00\x00\x3c"  # properties: session expiry 60 s
    body = header + len(client_id).to_bytes(2, "big") + client_id + tail
    length = len(body)
    encoded = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return b"\x10" + bytes(encoded) + body


#: After the client id, with flags 0x86 (user name, will, clean start): will topic "t", will
#: message "hi", user name "user" (MQTT 5 puts empty will properties first).
_WILL_AND_USER = b"\x00\x01t\x00\x02hi\x00\x04user"


@pytest.mark.parametrize("level", [4, 5])
@pytest.mark.parametrize(
    ("old", "new"),
    [("", "device-00001"), ("mqtt5-sample-1a2b", "thing"), ("x" * 200, "short"), ("a", "b" * 300)],
)
def test_a_connect_keeps_everything_but_its_client_id(level: int, old: str, new: str) -> None:
    tail = (b"\x00" if level == 5 else b"") + _WILL_AND_USER
    packet = _connect(old.encode(), level=level, tail=tail, flags=0x86)
    rewritten = with_client_id(packet, new)
    assert parse_connect(rewritten) == (new, level)
    assert rewritten.endswith(new.encode() + tail)
    assert rewritten.startswith(b"\x10")
    assert with_client_id(rewritten, old) == packet


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(
        work_dir=tmp_path_factory.mktemp("sandbox"), connect_policy=ConnectPolicy.ANY_CLIENT_ID
    ) as running:
        yield running


def _der(created: dict[str, Any]) -> bytes:
    return x509.load_pem_x509_certificate(created["certificatePem"].encode()).public_bytes(
        Encoding.DER
    )


@pytest.mark.mqtt
def test_any_client_id_connects_as_the_one_attached_thing(sandbox: Sandbox) -> None:
    iot = sandbox.iot_client()
    iot.create_thing(thingName="policy-a")
    iot.create_thing(thingName="policy-b")
    created = iot.create_keys_and_certificate(setAsActive=True)
    der = _der(created)
    engine = sandbox.engine

    def refused(client_id: str) -> str:
        with pytest.raises(ConnectionRefusedByPolicyError) as exc:
            engine.authorize_connection(der, client_id)
        return exc.value.reason

    assert refused("") == "unattached"
    iot.attach_thing_principal(thingName="policy-a", principal=created["certificateArn"])
    for client_id in ("", "mqtt5-sample-9f", "policy-b", "policy-a"):
        assert engine.authorize_connection(der, client_id) == "policy-a"
    iot.attach_thing_principal(thingName="policy-b", principal=created["certificateArn"])
    assert refused("policy-a") == "things"
    iot.detach_thing_principal(thingName="policy-b", principal=created["certificateArn"])
    iot.update_certificate(certificateId=created["certificateId"], newStatus="INACTIVE")
    assert refused("") == "inactive"
    iot.update_certificate(certificateId=created["certificateId"], newStatus="ACTIVE")
    engine.set_connect_policy(ConnectPolicy.THING_NAME)
    try:
        assert refused("") == "client-id"
        assert engine.authorize_connection(der, "policy-a") == "policy-a"
    finally:
        engine.set_connect_policy(ConnectPolicy.ANY_CLIENT_ID)


class _Client:
    """A paho MQTT 5 client with an empty client id and a created certificate."""

    def __init__(self, sandbox: Sandbox, cert: Path, key: Path) -> None:
        assert sandbox.pki is not None
        endpoint = sandbox.endpoints["ats"]
        context = ssl.create_default_context(
            cafile=str(sandbox.pki.ats_root_pems["amazon-root-ca-1"])
        )
        context.load_cert_chain(str(cert), str(key))
        self.messages: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self.connack: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        self.client.tls_set_context(context)
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self.connack.put(reason)
        self.client.on_message = lambda _c, _u, m: self.messages.put(
            (m.topic, json.loads(m.payload))
        )
        self.client.connect(endpoint.host, endpoint.port, keepalive=30)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.mqtt
def test_an_empty_client_id_gets_its_things_topics_and_no_others(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    assert sandbox.pki is not None
    if (why := names_unresolved(sandbox._data_plane)) is not None:
        pytest.skip(why)
    iot = sandbox.iot_client()
    for name in ("empty-id-thing", "other-thing"):
        iot.create_thing(thingName=name)
    created = iot.create_keys_and_certificate(setAsActive=True)
    iot.attach_thing_principal(thingName="empty-id-thing", principal=created["certificateArn"])
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text(created["certificatePem"])
    key.write_text(created["keyPair"]["PrivateKey"])
    device = _Client(sandbox, cert, key)
    try:
        assert not device.connack.get(timeout=WAIT).is_failure
        mine, other = "$aws/things/empty-id-thing/jobs", "$aws/things/other-thing/jobs"
        device.client.subscribe([(f"{mine}/get/accepted", 1), (f"{other}/get/accepted", 1)])
        device.client.publish(f"{other}/get", json.dumps({"clientToken": "theirs"}), qos=1)
        device.client.publish(f"{mine}/get", json.dumps({"clientToken": "mine"}), qos=1)
        topic, body = device.messages.get(timeout=WAIT)
        assert (topic, body["clientToken"]) == (f"{mine}/get/accepted", "mine")
        with pytest.raises(queue.Empty):
            device.messages.get(timeout=1.0)
    finally:
        device.close()
