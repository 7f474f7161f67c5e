"""The sandbox's device data plane over MQTT: mosquitto with the sandbox PKI, and the Jobs bridge.

`start_data_plane(engine, pki=..., work_dir=...)` starts one mosquitto per
endpoint ("legacy", "ats"), each with a mutual-TLS listener whose server
certificate carries the AWS-shaped host name, and a bridge that serves the
AWS IoT Jobs MQTT API (and a minimal named shadow service) on top of a
`JobsDataPlane`. See docs/sandbox-mqtt.md.
"""

from infra.sandbox.mqtt._broker import BrokerError
from infra.sandbox.mqtt._dataplane import (
    ENDPOINT_KINDS,
    Endpoint,
    MqttDataPlane,
    MqttError,
    start_data_plane,
)
from infra.sandbox.mqtt._ports import (
    ALPN_PORT,
    ListenerPorts,
    PortUnavailableError,
    check_bindable,
    listener_ports,
)

__all__ = [
    "ALPN_PORT",
    "ENDPOINT_KINDS",
    "BrokerError",
    "Endpoint",
    "ListenerPorts",
    "MqttDataPlane",
    "MqttError",
    "PortUnavailableError",
    "check_bindable",
    "listener_ports",
    "start_data_plane",
]
