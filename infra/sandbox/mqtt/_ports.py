"""Which local ports the ATS endpoint's MQTT listeners take, and whether they can be bound.

By default every listener takes a free port chosen at start, and clients are
pointed at it (`connect_override`, an SDK `port` option). Device code that an
integrator did not write for the sandbox cannot be pointed anywhere: the AWS
IoT Device SDK v2 jobs sample connects on 8883, the SDK builders default to
443 with ALPN. `sandbox up --mqtt-port PORT` puts the ATS endpoint's listeners
on the ports AWS IoT Core uses:

- 443 is MQTT with the ALPN protocol `x-amzn-mqtt-ca` (the `alpn_port`
  listener), as AWS serves it on 443;
- any other port is MQTT over mutual TLS (the `port` listener), what AWS
  serves on 8883.

Invariants:
- at most one port per listener; a port is 1..65535;
- a port that is taken, or below the unprivileged-port limit for a process
  that may not bind it, is refused before anything starts, with a message that
  says what to do (`PortUnavailableError`); a fixed port is never silently
  replaced by another.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from infra.sandbox.errors import PortUnavailableError

__all__ = [
    "ALPN_PORT",
    "ListenerPorts",
    "PortUnavailableError",
    "check_bindable",
    "listener_ports",
]

#: The port on which AWS IoT Core serves MQTT with ALPN `x-amzn-mqtt-ca`.
ALPN_PORT: Final = 443
_MAX_PORT: Final = 65535
_UNPRIVILEGED_START = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")


@dataclass(frozen=True, slots=True)
class ListenerPorts:
    """Fixed ports of the ATS endpoint's listeners; 0 means a free port chosen at start."""

    #: MQTT over mutual TLS (AWS: 8883).
    mqtt: int = 0
    #: MQTT over mutual TLS with ALPN x-amzn-mqtt-ca (AWS: 443).
    alpn: int = 0

    def fixed(self) -> tuple[int, ...]:
        """The ports asked for, in listener order."""
        return tuple(port for port in (self.mqtt, self.alpn) if port)


def listener_ports(ports: Iterable[int]) -> ListenerPorts:
    """The listeners that `--mqtt-port` values move: 443 the ALPN one, any other the MQTT one."""
    mqtt = alpn = 0
    for port in ports:
        if not 0 < port <= _MAX_PORT:
            raise PortUnavailableError(
                f"--mqtt-port {port} is not a TCP port; give 1 to {_MAX_PORT} (8883, 443)"
            )
        if port == ALPN_PORT:
            if alpn:
                raise PortUnavailableError(f"--mqtt-port {ALPN_PORT} is given twice")
            alpn = port
        elif mqtt:
            raise PortUnavailableError(
                f"--mqtt-port {mqtt} and {port}: the ATS endpoint has one MQTT/TLS listener "
                f"(AWS: 8883) and one with ALPN on {ALPN_PORT}; give one port other than "
                f"{ALPN_PORT}, and {ALPN_PORT} if you want the ALPN listener there too"
            )
        else:
            mqtt = port
    return ListenerPorts(mqtt=mqtt, alpn=alpn)


def _unprivileged_start() -> int:
    try:
        return int(_UNPRIVILEGED_START.read_text().strip())
    except (OSError, ValueError):
        return 1024


def check_bindable(port: int, *, host: str = "127.0.0.1") -> None:
    """Raise `PortUnavailableError` unless this process can listen on `host:port` now.

    mosquitto sets SO_REUSEADDR, so the probe does too: a port with only
    connections in TIME_WAIT is free for it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            probe.listen(1)
        except PermissionError as exc:
            limit = _unprivileged_start()
            raise PortUnavailableError(
                f"port {port} is privileged (below {limit}) and this process may not bind it: "
                f"run `sandbox up` as root, grant it CAP_NET_BIND_SERVICE, or lower "
                f"net.ipv4.ip_unprivileged_port_start (sysctl) to {port}"
            ) from exc
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortUnavailableError(
                    f"port {port} on {host} is in use by another process (see `ss -ltnp "
                    f"'sport = :{port}'`); stop it, or give another --mqtt-port"
                ) from exc
            raise PortUnavailableError(f"cannot listen on {host}:{port}: {exc}") from exc
