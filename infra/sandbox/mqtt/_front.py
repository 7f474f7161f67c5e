"""The TLS front of every device MQTT listener: mutual TLS, the device policy's connect rule.

AWS IoT Core authenticates a device by its client certificate and authorizes
its CONNECT with the policy; the project's device policy
(infra/aws/device-policy.yaml) allows `iot:Connect` only for the client id
`${iot:Connection.Thing.ThingName}` with `iot:Connection.Thing.IsAttached`:
the certificate must be registered and ACTIVE, attached to a thing, and the
client id must be that thing's name. mosquitto can check none of this (it knows
neither the registry nor a certificate's status), so each listener a device
connects to is this front:

- it terminates TLS with the endpoint's server certificate and requires a
  client certificate that chains to the device CA or to any registered
  certificate (a certificate registered without a CA is its own trust anchor);
- on the ATS endpoint's "443" listener it selects ALPN `x-amzn-mqtt-ca` and
  closes a client that did not offer it, as AWS does;
- it reads the first MQTT packet, a CONNECT, and asks the identity
  (`DeviceIdentity`, the engine) whether this certificate may connect with this
  client id; a refused MQTT 5 client gets CONNACK "Not authorized" (0x87), a
  refused MQTT 3.1.1 client is closed (`infra.sandbox.decisions`);
- it then relays bytes both ways to the broker's unix socket, whose ACL grants
  each client id its own `$aws/things/<client id>/...` topics; under a connect
  policy that admits any client id (the SDK samples', `ConnectPolicy`) the
  CONNECT goes up with the thing's name as client id, so the thing's topics are
  the ones the connection may use;
- when a certificate leaves ACTIVE (UpdateCertificate) every connection made
  with it is closed.

One thread accepts; two threads per connection relay. Every socket has a
timeout for the handshake and the CONNECT; a bad client costs one thread for
at most that long.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

import structlog

from infra.sandbox import decisions as d
from infra.sandbox.engine import ConnectionRefusedByPolicyError

__all__ = ["ALPN_MQTT", "DeviceFront", "DeviceIdentity", "parse_connect", "with_client_id"]

log = structlog.get_logger(__name__)

ALPN_MQTT: Final = "x-amzn-mqtt-ca"
_HANDSHAKE_TIMEOUT: Final = 10.0
_MAX_CONNECT: Final = 64 * 1024
_CONNECT: Final = 0x10
_MQTT5: Final = 5


@runtime_checkable
class DeviceIdentity(Protocol):
    """What the front asks of the registry (the engine implements it)."""

    def authorize_connection(self, certificate_der: bytes, client_id: str) -> str:
        """The thing this CONNECT connects as; raises `ConnectionRefusedByPolicyError`."""
        ...

    def watch_certificates(self, listener: Callable[[str], None]) -> None:
        """Call `listener(certificate_id)` after a certificate is registered, changes or goes."""
        ...

    def unwatch_certificates(self, listener: Callable[[str], None]) -> None:
        """Stop calling a listener given to `watch_certificates`."""
        ...

    def certificate_status(self, certificate_id: str) -> str | None:
        """The certificate's status, None when it is not registered."""
        ...

    def certificate_pem(self, certificate_id: str) -> str | None:
        """The registered certificate's PEM, None when it is not registered."""
        ...

    def trust_anchor_pems(self) -> list[str]:
        """Every registered CA and device certificate."""
        ...


class _BadConnectError(ValueError):
    """The first packet is not an MQTT CONNECT this front can read."""


class _TruncatedError(_BadConnectError):
    """The bytes so far end inside the packet's fixed header."""


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    for _ in range(4):
        if at >= len(data):
            raise _TruncatedError("truncated length")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
    raise _BadConnectError("malformed length")


def parse_connect(packet: bytes) -> tuple[str, int]:
    """The client id and protocol level of an MQTT 3.1.1 or 5 CONNECT packet (whole)."""
    if not packet or packet[0] != _CONNECT:
        raise _BadConnectError("the first packet is not CONNECT")
    _, at = _varint(packet, 1)
    name_len = int.from_bytes(packet[at : at + 2], "big")
    at += 2 + name_len
    if at + 4 > len(packet):
        raise _BadConnectError("truncated CONNECT")
    level = packet[at]
    at += 4  # level, flags, keep-alive
    if level == _MQTT5:  # MQTT 5 has properties before the payload
        props, at = _varint(packet, at)
        at += props
    size = int.from_bytes(packet[at : at + 2], "big")
    if at + 2 + size > len(packet):
        raise _BadConnectError("truncated client id")
    try:
        return packet[at + 2 : at + 2 + size].decode("utf-8"), level
    except UnicodeDecodeError as exc:
        raise _BadConnectError("the client id is not UTF-8") from exc


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def with_client_id(packet: bytes, client_id: str) -> bytes:
    """The CONNECT packet (whole, MQTT 3.1.1 or 5) with its client id replaced."""
    _, level = parse_connect(packet)  # checks that the packet is a whole CONNECT
    _, body_at = _varint(packet, 1)
    name_len = int.from_bytes(packet[body_at : body_at + 2], "big")
    at = body_at + 2 + name_len + 4  # protocol name, level, flags, keep-alive
    if level == _MQTT5:
        props, at = _varint(packet, at)
        at += props
    old_size = int.from_bytes(packet[at : at + 2], "big")
    new = client_id.encode("utf-8")
    body = packet[body_at:at] + len(new).to_bytes(2, "big") + new + packet[at + 2 + old_size :]
    return packet[:1] + _encode_varint(len(body)) + body


def _read_connect(conn: ssl.SSLSocket) -> bytes:
    data = b""
    while True:
        if data and data[0] != _CONNECT:
            raise _BadConnectError("the first packet is not CONNECT")
        if len(data) >= 2:  # noqa: PLR2004 - fixed header: type byte and at least one length byte
            with contextlib.suppress(_TruncatedError):
                length, at = _varint(data, 1)
                if len(data) >= at + length:
                    return data
        if len(data) > _MAX_CONNECT:
            raise _BadConnectError("CONNECT too large")
        chunk = conn.recv(4096)
        if not chunk:
            raise _BadConnectError("closed before CONNECT")
        data += chunk


def _relay(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except (OSError, ValueError):
        pass
    finally:
        for sock in (sink, source):
            _hang_up(sock)


def _hang_up(sock: socket.socket) -> None:
    """Shut a socket down from any thread (an SSLSocket's TLS state is left alone)."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class DeviceFront:
    """A TLS listener on 127.0.0.1 that admits CONNECTs the identity allows and relays them."""

    def __init__(
        self,
        *,
        kind: str,
        cert: Path,
        key: Path,
        device_ca: Path,
        identity: DeviceIdentity,
        upstream: Path,
        alpn: bool = False,
        port: int = 0,
    ) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        context.verify_mode = ssl.CERT_REQUIRED
        # A registered certificate is a trust anchor of its own (it may have no CA here).
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        context.load_verify_locations(device_ca)
        if alpn:
            context.set_alpn_protocols([ALPN_MQTT])
        self.kind = kind
        self._alpn = alpn
        self._context = context
        self._identity = identity
        self._upstream = upstream
        self._anchors: set[str] = set()
        self._anchors_lock = threading.Lock()
        self._connections: dict[str, set[socket.socket]] = {}
        self._connections_lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name=f"mqtt-front-{kind}", daemon=True)
        #: Refused connections by reason (tls, alpn, connect, unregistered, inactive, ...).
        self.refusals: Counter[str] = Counter()
        for pem in identity.trust_anchor_pems():
            self._trust(pem)
        identity.watch_certificates(self._certificate_changed)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._identity.unwatch_certificates(self._certificate_changed)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)
        with self._connections_lock:
            live = [sock for socks in self._connections.values() for sock in socks]
        for sock in live:
            _hang_up(sock)

    # -- certificates ----------------------------------------------------------------

    def _trust(self, pem: str) -> None:
        fingerprint = hashlib.sha256(pem.encode()).hexdigest()
        with self._anchors_lock:
            if fingerprint in self._anchors:
                return
            self._anchors.add(fingerprint)
            self._context.load_verify_locations(cadata=pem)

    def _certificate_changed(self, certificate_id: str) -> None:
        if self._stop.is_set():
            return
        pem = self._identity.certificate_pem(certificate_id)
        if pem is not None:
            self._trust(pem)
        if self._identity.certificate_status(certificate_id) == "ACTIVE":
            return
        with self._connections_lock:
            live = list(self._connections.get(certificate_id, ()))
        for sock in live:
            _hang_up(sock)
        if live:
            log.info(
                "mqtt_connections_closed",
                endpoint=self.kind,
                certificate_id=certificate_id,
                connections=sum(isinstance(sock, ssl.SSLSocket) for sock in live),
            )

    # -- connections -----------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(_HANDSHAKE_TIMEOUT)
        # MQTT packets are small: without this, Nagle's algorithm and the client's
        # delayed ACK stall replies by ~40 ms (mosquitto's `set_tcp_nodelay`, as before).
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn = self._context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            self._refuse(raw, "tls", str(exc))
            return
        der = conn.getpeercert(binary_form=True) or b""
        certificate_id = hashlib.sha256(der).hexdigest()
        self._track(certificate_id, conn)
        upstream: socket.socket | None = None
        try:
            upstream = self._admit(conn, der)
            if upstream is None:
                return
            self._track(certificate_id, upstream)
            conn.settimeout(None)
            upstream.settimeout(None)
            back = threading.Thread(target=_relay, args=(upstream, conn), daemon=True)
            back.start()
            _relay(conn, upstream)
            back.join(timeout=5)
        finally:
            self._untrack(certificate_id, conn, upstream)
            for sock in (conn, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()

    def _admit(self, conn: ssl.SSLSocket, der: bytes) -> socket.socket | None:
        """The upstream socket with the CONNECT sent, or None when refused (and closed)."""
        if self._alpn and conn.selected_alpn_protocol() != ALPN_MQTT:
            self._refuse(conn, "alpn", f"client did not offer {ALPN_MQTT}")
            return None
        try:
            first = _read_connect(conn)
            client_id, level = parse_connect(first)
        except (OSError, ValueError) as exc:
            self._refuse(conn, "connect", str(exc))
            return None
        try:
            thing = self._identity.authorize_connection(der, client_id)
        except ConnectionRefusedByPolicyError as exc:
            if level == _MQTT5:
                with contextlib.suppress(OSError):
                    conn.sendall(bytes((0x20, 3, 0, d.CONNECT_REFUSED_V5_REASON, 0)))
            self._refuse(conn, exc.reason, exc.message, client_id=client_id)
            return None
        if thing != client_id:
            # A policy that admits any client id (`ConnectPolicy.ANY_CLIENT_ID`): the broker,
            # whose ACL is keyed by client id, sees the thing's name.
            first = with_client_id(first, thing)
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.settimeout(5)
            upstream.connect(str(self._upstream))
            upstream.sendall(first)
        except OSError as exc:
            upstream.close()
            self._refuse(conn, "upstream", str(exc))
            return None
        return upstream

    def _track(self, certificate_id: str, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.setdefault(certificate_id, set()).add(sock)

    def _untrack(self, certificate_id: str, *socks: socket.socket | None) -> None:
        with self._connections_lock:
            live = self._connections.get(certificate_id)
            if live is None:
                return
            live.difference_update(s for s in socks if s is not None)
            if not live:
                del self._connections[certificate_id]

    def _refuse(
        self, sock: socket.socket, reason: str, detail: str, *, client_id: str | None = None
    ) -> None:
        self.refusals[reason] += 1
        log.info(
            "mqtt_connect_refused",
            endpoint=self.kind,
            reason=reason,
            client_id=client_id,
            detail=detail[:200],
        )
        with contextlib.suppress(OSError):
            sock.close()
