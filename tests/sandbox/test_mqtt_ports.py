"""`sandbox up --mqtt-port`: the ATS endpoint's listeners on the ports AWS uses (8883, 443).

Stock clients cannot be pointed at a free port: the SDK v2 jobs sample connects on 8883,
the SDK builders default to 443 with ALPN. A fixed port is served as asked or refused
before anything starts (exit 2), never moved elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra.sandbox.cli import sandbox_app
from infra.sandbox.errors import PortUnavailableError
from infra.sandbox.mqtt import ListenerPorts, check_bindable, listener_ports
from infra.sandbox.mqtt._front import ALPN_MQTT
from infra.sandbox.mqtt.testing import handshake, tls_context
from infra.sandbox.runtime import Sandbox

ATS_ROOT = "amazon-root-ca-1"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ([], ListenerPorts()),
        ([8883], ListenerPorts(mqtt=8883)),
        ([443], ListenerPorts(alpn=443)),
        ([443, 8883], ListenerPorts(mqtt=8883, alpn=443)),
        ([18883], ListenerPorts(mqtt=18883)),
    ],
)
def test_443_moves_the_alpn_listener_and_any_other_port_the_mqtt_one(
    given: list[int], expected: ListenerPorts
) -> None:
    assert listener_ports(given) == expected


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ([0], "is not a TCP port"),
        ([65536], "is not a TCP port"),
        ([-1], "is not a TCP port"),
        ([8883, 8884], "one MQTT/TLS listener"),
        ([443, 443], "given twice"),
    ],
)
def test_ports_that_no_listener_can_take_are_refused(given: list[int], says: str) -> None:
    with pytest.raises(PortUnavailableError, match=says):
        listener_ports(given)


@contextlib.contextmanager
def _held_port() -> Iterator[int]:
    """A port that another process (here: this socket) listens on."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        yield holder.getsockname()[1]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    try:
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_a_taken_port_is_refused_with_what_to_do() -> None:
    with _held_port() as port, pytest.raises(PortUnavailableError) as refused:
        check_bindable(port)
    assert f"port {port} on 127.0.0.1 is in use" in str(refused.value)
    assert "give another --mqtt-port" in str(refused.value)


def _unprivileged_start() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())


def test_a_privileged_port_is_refused_for_a_process_that_may_not_bind_it() -> None:
    limit = _unprivileged_start()
    if limit <= 1:
        pytest.skip("this machine has no privileged ports (ip_unprivileged_port_start is 0)")
    # As root, the check runs in a child that drops to `nobody` after its imports.
    drop = "os.setgid(65534); os.setuid(65534)" if os.geteuid() == 0 else "pass"
    code = (
        "import os\n"
        "from infra.sandbox.errors import PortUnavailableError\n"
        "from infra.sandbox.mqtt._ports import check_bindable\n"
        f"{drop}\n"
        "try:\n"
        f"    check_bindable({limit - 1})\n"
        "except PortUnavailableError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert f"port {limit - 1} is privileged (below {limit})" in done.stdout
    assert "CAP_NET_BIND_SERVICE" in done.stdout


@pytest.mark.mqtt
def test_fixed_ports_serve_the_ats_endpoint_over_tls_and_alpn(tmp_path: Path) -> None:
    mqtt_port, alpn_port = _free_ports(2)
    ports = ListenerPorts(mqtt=mqtt_port, alpn=alpn_port)
    with Sandbox(work_dir=tmp_path, mqtt_ports=ports) as sandbox:
        assert sandbox.pki is not None
        sandbox.provision(1)
        ats = sandbox.endpoints["ats"]
        assert (ats.port, ats.alpn_port) == (mqtt_port, alpn_port)
        assert sandbox.describe()["endpoints"]["ats"] == {
            "host": ats.host,
            "port": mqtt_port,
            "alpn_port": alpn_port,
        }
        context = tls_context(sandbox.pki, "device-00001", sandbox.pki.ats_root_pems[ATS_ROOT])
        with handshake(ats.host, mqtt_port, context) as tls:
            assert tls.version() is not None
        context.set_alpn_protocols([ALPN_MQTT])
        with handshake(ats.host, alpn_port, context) as tls:
            assert tls.selected_alpn_protocol() == ALPN_MQTT
        # The legacy endpoint keeps a free port of its own.
        assert sandbox.endpoints["legacy"].port not in (mqtt_port, alpn_port)


@pytest.mark.mqtt
def test_fixed_ports_go_to_the_first_region_only(tmp_path: Path) -> None:
    (mqtt_port,) = _free_ports(1)
    with Sandbox(
        work_dir=tmp_path, regions=["eu-west-1"], mqtt_ports=ListenerPorts(mqtt=mqtt_port)
    ) as sandbox:
        regions = sandbox.describe()["regions"]
        assert regions["us-east-1"]["endpoints"]["ats"]["port"] == mqtt_port
        assert regions["eu-west-1"]["endpoints"]["ats"]["port"] not in (0, mqtt_port)


@pytest.mark.mqtt
def test_a_sandbox_whose_port_is_taken_does_not_start(tmp_path: Path) -> None:
    with _held_port() as port:
        sandbox = Sandbox(work_dir=tmp_path, mqtt_ports=ListenerPorts(mqtt=port))
        with pytest.raises(PortUnavailableError, match=f"port {port}"):
            sandbox.start()
    assert sandbox.endpoints == {}
    assert not (tmp_path / "mqtt" / "ats" / "mosquitto.conf").exists()


@pytest.mark.mqtt
def test_sandbox_up_serves_and_describes_the_ports_it_was_given(tmp_path: Path) -> None:
    (mqtt_port,) = _free_ports(1)
    command = [
        *(sys.executable, "-m", "orchestrator.cli", "sandbox", "up", "--output", "json"),
        *("--state-dir", str(tmp_path), "--mqtt-port", str(mqtt_port)),
        *("--connect-policy", "any-client-id"),
    ]
    up = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert up.stdout is not None
        description = json.loads(up.stdout.readline())
    finally:
        up.terminate()
        up.wait(timeout=30)
    ats = description["endpoints"]["ats"]
    assert ats["port"] == mqtt_port
    assert ats["alpn_port"] not in (0, mqtt_port)  # the ALPN listener was not moved
    assert description["connect_policy"] == "any-client-id"
    assert up.returncode == 0


@pytest.mark.mqtt
def test_sandbox_up_exits_2_when_its_mqtt_port_is_taken(tmp_path: Path) -> None:
    with _held_port() as port:
        result = CliRunner().invoke(
            sandbox_app, ["up", "--mqtt-port", str(port), "--state-dir", str(tmp_path)]
        )
    assert result.exit_code == 2
    assert f"the sandbox did not start: port {port} on 127.0.0.1 is in use" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--mqtt-port", "8883", "--mqtt-port", "8884"], "one MQTT/TLS listener"),
        (["--mqtt-port", "99999"], "is not a TCP port"),
        (["--mqtt-port", "8883", "--no-mqtt"], "drop --no-mqtt"),
    ],
)
def test_sandbox_up_refuses_ports_it_cannot_serve_before_starting(
    args: list[str], says: str
) -> None:
    result = CliRunner().invoke(sandbox_app, ["up", *args])
    assert result.exit_code == 2
    assert says in result.output


def _bindable(port: int) -> str | None:
    try:
        check_bindable(port)
    except PortUnavailableError as exc:
        return str(exc)
    return None


@pytest.mark.mqtt
def test_the_aws_ports_8883_and_443_serve_the_ats_endpoint_when_free(tmp_path: Path) -> None:
    sandbox = Sandbox(work_dir=tmp_path, mqtt_ports=listener_ports([8883, 443]))
    try:
        sandbox.start()
    except PortUnavailableError as exc:  # another program (or test) holds one of them
        pytest.skip(f"port 8883 or 443 cannot be bound here: {exc}")
    try:
        assert sandbox.pki is not None
        sandbox.provision(1)
        ats = sandbox.endpoints["ats"]
        assert (ats.port, ats.alpn_port) == (8883, 443)
        context = tls_context(sandbox.pki, "device-00001", sandbox.pki.ats_root_pems[ATS_ROOT])
        context.set_alpn_protocols([ALPN_MQTT])
        with handshake(ats.host, 443, context) as tls:
            assert tls.selected_alpn_protocol() == ALPN_MQTT
        plain = tls_context(sandbox.pki, "device-00001", sandbox.pki.ats_root_pems[ATS_ROOT])
        with handshake(ats.host, 8883, plain) as tls:
            assert tls.selected_alpn_protocol() is None
    finally:
        sandbox.stop()


@pytest.mark.mqtt
def test_a_handshake_on_a_wrong_root_fails_so_the_checks_above_can_fail(tmp_path: Path) -> None:
    """The handshakes above verify the server: one against another PKI's root fails."""
    from infra.sandbox.pki import SandboxPki

    other = SandboxPki.create_or_load(tmp_path / "other")
    mqtt_port = _free_ports(1)[0]
    with Sandbox(work_dir=tmp_path / "sandbox", mqtt_ports=ListenerPorts(mqtt=mqtt_port)) as sb:
        ats = sb.endpoints["ats"]
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(ats.host, mqtt_port, tls_context(other, None, other.ats_root_pems[ATS_ROOT]))
