"""One Debian mosquitto per endpoint behind a TLS front, and a unix socket for the bridge.

Why one process per endpoint and not two listeners on one broker: the bridge
must know through which endpoint each request came ("legacy" / "ats").
mosquitto's per-listener `mount_point` would say it, but 2.0.11 (Debian's)
prefixes the mount point on the way in and does not strip it on the way out,
so devices would receive `legacy/$aws/...` topics and the AWS IoT Device SDK
would drop them. Two small brokers, each with its own bridge connection, keep
every topic exactly as AWS IoT Core has it. A broker starts in milliseconds.

Per broker:
- devices connect to a TLS front (`_front.DeviceFront`) on 127.0.0.1: server
  certificate for the endpoint's AWS-shaped host name, mutual TLS, and the
  device policy's connect rule (registered ACTIVE certificate attached to the
  thing named by the client id); for the ATS endpoint a second front serves
  MQTT over "443" with ALPN `x-amzn-mqtt-ca` as AWS does (`alpn_port`);
- the fronts relay admitted connections to a unix socket listener whose ACL
  grants each client id (the thing name) only `$aws/things/<its name>/jobs/#`
  and `$aws/things/<its name>/shadow/#`, as an AWS IoT policy with
  `${iot:Connection.Thing.ThingName}` would;
- a second unix socket listener, anonymous and unrestricted, reachable only
  through the file system, is the bridge's.

mosquitto listens on no TCP port; the fronts bind port 0 (a free port) or the
port they are given (`ListenerPorts`, `sandbox up --mqtt-port`): a fixed port
that cannot be bound is an error, never a move to another port.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import structlog

from infra.sandbox.errors import SandboxError
from infra.sandbox.mqtt._front import DeviceFront, DeviceIdentity
from infra.sandbox.mqtt._ports import ListenerPorts, PortUnavailableError
from infra.sandbox.pki import SandboxPki

__all__ = ["Broker", "BrokerError", "find_mosquitto"]

log = structlog.get_logger(__name__)

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0

ACL = """\
# Behind the TLS fronts, which admit a CONNECT only when its client id is the name of
# the thing its ACTIVE certificate is attached to: each thing may use only its own Jobs
# and Shadow topics, as an AWS IoT policy with ${iot:Connection.Thing.ThingName} allows.
pattern readwrite $aws/things/%c/jobs/#
pattern readwrite $aws/things/%c/shadow/#
"""


class BrokerError(SandboxError):
    """mosquitto could not be started or reached (the message says what to do)."""


def find_mosquitto() -> str:
    """The mosquitto binary: PATH first, then Debian's /usr/sbin."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise BrokerError(
            "mosquitto is not installed: run `bash scripts/bootstrap.sh` "
            "(installs Debian's mosquitto) or `apt-get install mosquitto`"
        )
    return found


def _quote(path: Path) -> str:
    text = str(path)
    if any(c.isspace() for c in text):
        raise BrokerError(f"mosquitto cannot read paths with spaces: {text}; use another directory")
    return text


# mosquitto cannot notice that the process that started it died; this shell can. It
# starts the broker and a watcher that waits for the end of its standard input, a pipe
# whose other end only the sandbox holds: however the sandbox stops (SIGKILL
# included), the pipe ends and the watcher stops the broker. SIGTERM stops it too.
# The shell exits with the broker's status. Arguments: mosquitto binary, config file.
_WATCHDOG = """
exec 3<&0 </dev/null
"$1" -c "$2" &
broker=$!
{ cat <&3 >/dev/null 2>&1; kill -TERM "$broker" 2>/dev/null; } &
exec 3<&-
trap 'kill -TERM "$broker" 2>/dev/null' TERM
wait "$broker"
status=$?
while kill -0 "$broker" 2>/dev/null; do wait "$broker"; status=$?; done
exit "$status"
"""


class Broker:
    """A mosquitto subprocess serving one endpoint ("legacy" or "ats") behind its TLS fronts.

    Started under a small shell (`_WATCHDOG`) that stops it when the sandbox
    process goes away, so that a killed sandbox leaves no broker running.
    """

    def __init__(
        self,
        kind: str,
        *,
        pki: SandboxPki,
        directory: Path,
        socket_path: Path,
        identity: DeviceIdentity,
        ports: ListenerPorts | None = None,
    ) -> None:
        self.kind = kind
        self._fixed = ports or ListenerPorts()
        self.host = pki.hosts[kind]
        self.port = 0
        #: MQTT over "443" with ALPN x-amzn-mqtt-ca (ATS endpoint only; 0 when none).
        self.alpn_port = 0
        self._fronts: list[DeviceFront] = []
        self.socket_path = socket_path
        #: Where the fronts hand admitted device connections to mosquitto.
        self.devices_socket_path = socket_path.with_name("devices.sock")
        self._identity = identity
        self._pki = pki
        self._directory = directory
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "mosquitto.log"
        self._stderr_path = directory / "mosquitto.stderr"

    @property
    def fronts(self) -> tuple[DeviceFront, ...]:
        """The TLS listeners devices connect to (the "443" one last)."""
        return tuple(self._fronts)

    def _write_config(self) -> Path:
        self._directory.mkdir(parents=True, exist_ok=True)
        acl = self._directory / "acl"
        acl.write_text(ACL)
        conf = self._directory / "mosquitto.conf"
        lines = [
            "# Written by the ca-migrate sandbox; rewritten on every start.",
            # mosquitto drops root privileges to user "mosquitto" unless told
            # otherwise; it must read keys that belong to whoever runs the sandbox.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "per_listener_settings true",
            "persistence false",
            "set_tcp_nodelay true",
            "max_queued_messages 100000",
            "max_inflight_messages 0",
            f"log_dest file {_quote(self.log_path)}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages false",
            "",
            f"listener 0 {_quote(self.devices_socket_path)}",
            "allow_anonymous true",
            f"acl_file {_quote(acl)}",
            "",
            f"listener 0 {_quote(self.socket_path)}",
            "allow_anonymous true",
            "",
        ]
        conf.write_text("\n".join(lines))
        return conf

    def start(self) -> None:
        """Start mosquitto, wait until both sockets accept connections, then the fronts."""
        binary = find_mosquitto()
        conf = self._write_config()
        for path in (self.socket_path, self.devices_socket_path, self.log_path):
            path.unlink(missing_ok=True)
        with self._stderr_path.open("wb") as stderr:
            self._process = subprocess.Popen(
                ["/bin/sh", "-c", _WATCHDOG, "sh", binary, str(conf)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=_broker_environment(),
            )
        if not self._wait_ready():
            error = self._collect_failure()
            raise BrokerError(
                f"mosquitto for the {self.kind} endpoint did not start: {error.strip()} "
                f"(configuration in {self._directory})"
            )
        try:
            self._start_front(alpn=False)
            if self.kind == "ats":
                self._start_front(alpn=True)
        except BaseException:
            self.stop()
            raise
        log.debug("mosquitto_started", endpoint=self.kind, host=self.host, port=self.port)

    def _start_front(self, *, alpn: bool) -> None:
        cert, key = self._pki.server_cert_pem(self.kind), self._pki.server_key_pem(self.kind)
        port = self._fixed.alpn if alpn else self._fixed.mqtt
        try:
            front = DeviceFront(
                kind=f"{self.kind}-alpn" if alpn else self.kind,
                cert=Path(cert),
                key=Path(key),
                device_ca=Path(self._pki.device_ca_pem),
                identity=self._identity,
                upstream=self.devices_socket_path,
                alpn=alpn,
                port=port,
            )
        except OSError as exc:  # ssl.SSLError included
            if port and not isinstance(exc, ssl.SSLError):
                raise PortUnavailableError(
                    f"the {self.kind} endpoint cannot listen on port {port}: {exc}; free it, "
                    "or give another --mqtt-port"
                ) from exc
            raise BrokerError(
                f"the {self.kind} endpoint did not start: its TLS listener cannot use the "
                f"server certificate {cert} and key {key} or bind a port ({exc}); delete "
                f"{self._pki.directory} to let the sandbox create a new PKI"
            ) from exc
        front.start()
        self._fronts.append(front)
        if alpn:
            self.alpn_port = front.port
        else:
            self.port = front.port

    def _wait_ready(self) -> bool:
        assert self._process is not None  # noqa: S101
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            if _accepts_unix(self.socket_path) and _accepts_unix(self.devices_socket_path):
                return True
            time.sleep(0.01)
        return False

    def _collect_failure(self) -> str:
        process, self._process = self._process, None
        if process is None:
            return ""
        _end_watch(process)
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=_STOP_TIMEOUT)
        text = self._stderr_path.read_text(errors="replace")
        if self.log_path.exists():
            text += self.log_path.read_text(errors="replace")
        return text or f"exit status {process.returncode}"

    def stop(self) -> None:
        """Stop mosquitto (SIGTERM, then SIGKILL after a few seconds); idempotent."""
        fronts, self._fronts = self._fronts, []
        for front in fronts:
            front.stop()
        self.port = self.alpn_port = 0
        process, self._process = self._process, None
        if process is None:
            return
        _end_watch(process)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=_STOP_TIMEOUT)
        self.socket_path.unlink(missing_ok=True)
        self.devices_socket_path.unlink(missing_ok=True)
        log.debug("mosquitto_stopped", endpoint=self.kind)

    @property
    def running(self) -> bool:
        """Whether the mosquitto process is alive."""
        return self._process is not None and self._process.poll() is None


def _end_watch(process: subprocess.Popen[bytes]) -> None:
    """Close the watcher's pipe: the broker stops (and the watcher's `cat` exits)."""
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()


def _broker_environment() -> dict[str, str]:
    """This process's environment without libnss_wrapper.

    Under nss_wrapper (scripts/env.sh) getaddrinfo("127.0.0.1") answers twice,
    and mosquitto binds every answer: the second bind fails with "Address
    already in use". The broker resolves no names, so it runs without it.
    """
    env = dict(os.environ)
    preload = [p for p in env.get("LD_PRELOAD", "").split(":") if p and "nss_wrapper" not in p]
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    else:
        env.pop("LD_PRELOAD", None)
    for key in ("NSS_WRAPPER_HOSTS", "NSS_WRAPPER_PASSWD", "NSS_WRAPPER_GROUP"):
        env.pop(key, None)
    return env


def _accepts_unix(path: Path) -> bool:
    # The socket file appears at bind(), before listen(): only a connect proves it ready.
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True
