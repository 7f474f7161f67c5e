"""One Debian mosquitto per endpoint: a TLS listener for devices, a unix socket for the bridge.

Why one process per endpoint and not two listeners on one broker: the bridge
must know through which endpoint each request came ("legacy" / "ats").
mosquitto's per-listener `mount_point` would say it, but 2.0.11 (Debian's)
prefixes the mount point on the way in and does not strip it on the way out,
so devices would receive `legacy/$aws/...` topics and the AWS IoT Device SDK
would drop them. Two small brokers, each with its own bridge connection, keep
every topic exactly as AWS IoT Core has it. A broker starts in milliseconds.

Per broker:
- TLS listener on 127.0.0.1, server certificate for the endpoint's AWS-shaped
  host name, mutual TLS against the sandbox device CA,
  `use_identity_as_username true` (username = certificate CN = thing name);
- ACLs as an AWS IoT policy would grant: each thing reads and writes only
  `$aws/things/<its name>/jobs/#` and `$aws/things/<its name>/shadow/#`;
- a unix socket listener, anonymous and unrestricted, reachable only through
  the file system, for the bridge;
- for the ATS endpoint, MQTT over 443 with ALPN `x-amzn-mqtt-ca` as AWS serves
  it: mosquitto 2.0.11 has no listener ALPN, so a TLS front (`_alpn.AlpnFront`,
  `alpn_port`) terminates mutual TLS with ALPN, checks that the CONNECT's client
  id is the certificate's CN and relays to a loopback listener whose ACL grants
  each client id its own topics.

mosquitto 2.0.11 cannot bind TCP port 0 (`listener 0` means a unix socket),
so a free port is picked by binding port 0 first; a lost race is retried. A
fixed port (`ListenerPorts`, `sandbox up --mqtt-port`) is tried once: losing it
is an error, never a move to another port.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

import structlog

from infra.sandbox.errors import SandboxError
from infra.sandbox.mqtt._alpn import AlpnFront
from infra.sandbox.mqtt._ports import ListenerPorts, PortUnavailableError
from infra.sandbox.pki import SandboxPki

__all__ = ["Broker", "BrokerError", "find_mosquitto"]

log = structlog.get_logger(__name__)

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_PORT_ATTEMPTS = 5

ACL_BY_CLIENT_ID = """\
# Behind the ALPN front, which admits a CONNECT only when its client id is the
# certificate's CN (the thing name): the same grants, keyed by client id.
pattern readwrite $aws/things/%c/jobs/#
pattern readwrite $aws/things/%c/shadow/#
"""

ACL = """\
# Each thing (certificate CN, used as the username) may use only its own
# Jobs and Shadow topics, as an AWS IoT policy with ${iot:Connection.Thing.ThingName}
# would allow.
pattern readwrite $aws/things/%u/jobs/#
pattern readwrite $aws/things/%u/shadow/#
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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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
    """A mosquitto subprocess serving one endpoint ("legacy" or "ats").

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
        ports: ListenerPorts | None = None,
    ) -> None:
        self.kind = kind
        self._fixed = ports or ListenerPorts()
        self.host = pki.hosts[kind]
        self.port = 0
        #: MQTT over "443" with ALPN x-amzn-mqtt-ca (ATS endpoint only; 0 when none).
        self.alpn_port = 0
        self._front: AlpnFront | None = None
        self._plain_port = 0
        self.socket_path = socket_path
        self._pki = pki
        self._directory = directory
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "mosquitto.log"
        self._stderr_path = directory / "mosquitto.stderr"

    def _write_config(self, port: int) -> Path:
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
            f"listener {port} 127.0.0.1",
            f"certfile {_quote(self._pki.server_cert_pem(self.kind))}",
            f"keyfile {_quote(self._pki.server_key_pem(self.kind))}",
            f"cafile {_quote(self._pki.device_ca_pem)}",
            "require_certificate true",
            "use_identity_as_username true",
            "allow_anonymous false",
            f"acl_file {_quote(acl)}",
            "",
            f"listener 0 {_quote(self.socket_path)}",
            "allow_anonymous true",
            "",
        ]
        if self._plain_port:
            by_client = self._directory / "acl-by-client-id"
            by_client.write_text(ACL_BY_CLIENT_ID)
            lines += [
                f"listener {self._plain_port} 127.0.0.1",
                "allow_anonymous true",
                f"acl_file {_quote(by_client)}",
                "",
            ]
        conf.write_text("\n".join(lines))
        return conf

    def start(self) -> None:
        """Start mosquitto and wait until both listeners accept connections."""
        binary = find_mosquitto()
        last_error = ""
        for _ in range(1 if self._fixed.mqtt else _PORT_ATTEMPTS):
            port = self._fixed.mqtt or _free_port()
            self._plain_port = _free_port() if self.kind == "ats" else 0
            conf = self._write_config(port)
            self.socket_path.unlink(missing_ok=True)
            self.log_path.unlink(missing_ok=True)
            with self._stderr_path.open("wb") as stderr:
                self._process = subprocess.Popen(
                    ["/bin/sh", "-c", _WATCHDOG, "sh", binary, str(conf)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    env=_broker_environment(),
                )
            if self._wait_ready(port) and (not self._plain_port or _accepts(self._plain_port)):
                self.port = port
                if self._plain_port:
                    self._start_front()
                log.debug("mosquitto_started", endpoint=self.kind, host=self.host, port=port)
                return
            last_error = self._collect_failure()
            if "Address already in use" not in last_error:
                break
        raise BrokerError(
            f"mosquitto for the {self.kind} endpoint did not start: {last_error.strip()} "
            f"(configuration in {self._directory})"
        )

    def _start_front(self) -> None:
        try:
            self._front = AlpnFront(
                cert=Path(self._pki.server_cert_pem(self.kind)),
                key=Path(self._pki.server_key_pem(self.kind)),
                device_ca=Path(self._pki.device_ca_pem),
                upstream=self._plain_port,
                port=self._fixed.alpn,
            )
        except OSError as exc:
            self.stop()
            raise PortUnavailableError(
                f"the ALPN listener of the {self.kind} endpoint cannot listen on port "
                f"{self._fixed.alpn}: {exc}; free it, or give another --mqtt-port"
            ) from exc
        self._front.start()
        self.alpn_port = self._front.port

    def _wait_ready(self, port: int) -> bool:
        assert self._process is not None  # noqa: S101
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            if _accepts(port) and _accepts_unix(self.socket_path):
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
        front, self._front = self._front, None
        if front is not None:
            front.stop()
            self.alpn_port = 0
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


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
