"""MQTT over port 443 with ALPN `x-amzn-mqtt-ca`, in front of a mosquitto that cannot do ALPN.

AWS IoT Core serves MQTT on 443 only to clients that offer the ALPN protocol
`x-amzn-mqtt-ca` (developer guide, "Protocols, port mappings, and
authentication"); without it the TLS connection is not served as MQTT.
mosquitto 2.0.11 has no ALPN setting for listeners (only `bridge_alpn`), so the
sandbox puts this small TLS front before it:

- it terminates TLS with the endpoint's server certificate, requires a client
  certificate from the sandbox device CA (mutual TLS, as on 8883), and selects
  `x-amzn-mqtt-ca`; a client that does not offer it is closed after the
  handshake, as AWS does;
- it reads the first MQTT packet, which must be a CONNECT whose client id is the
  certificate's CN (the thing name; the sandbox's device policy, like the ACL of
  the 8883 listener, grants each thing only its own topics);
- it then relays bytes both ways to a loopback listener of the same mosquitto
  whose ACL grants each client id its own `$aws/things/<client id>/...` topics.

One thread accepts; two threads per connection relay. Every socket has a
timeout for the handshake and the CONNECT; a bad client costs one thread for
at most that long.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path
from typing import Final

import structlog

__all__ = ["ALPN_MQTT", "AlpnFront", "connect_client_id"]

log = structlog.get_logger(__name__)

ALPN_MQTT: Final = "x-amzn-mqtt-ca"
_HANDSHAKE_TIMEOUT: Final = 10.0
_MAX_CONNECT: Final = 64 * 1024
_CONNECT: Final = 0x10


class _BadConnectError(ValueError):
    """The first packet is not an MQTT CONNECT this front can read."""


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    for _ in range(4):
        if at >= len(data):
            raise _BadConnectError("truncated length")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
    raise _BadConnectError("malformed length")


def connect_client_id(packet: bytes) -> str:
    """The client id of an MQTT 3.1.1 or 5 CONNECT packet (the whole packet)."""
    if not packet or packet[0] != _CONNECT:
        raise _BadConnectError("the first packet is not CONNECT")
    _, at = _varint(packet, 1)
    name_len = int.from_bytes(packet[at : at + 2], "big")
    at += 2 + name_len
    if at + 4 > len(packet):
        raise _BadConnectError("truncated CONNECT")
    level = packet[at]
    at += 4  # level, flags, keep-alive
    if level == 5:  # noqa: PLR2004 - MQTT 5 has properties before the payload
        props, at = _varint(packet, at)
        at += props
    size = int.from_bytes(packet[at : at + 2], "big")
    if at + 2 + size > len(packet):
        raise _BadConnectError("truncated client id")
    return packet[at + 2 : at + 2 + size].decode("utf-8")


def _read_connect(conn: ssl.SSLSocket) -> bytes:
    data = b""
    while True:
        if len(data) >= 2:  # noqa: PLR2004 - fixed header: type byte and at least one length byte
            with contextlib.suppress(_BadConnectError):
                length, at = _varint(data, 1)
                if len(data) >= at + length:
                    return data
        if len(data) > _MAX_CONNECT:
            raise _BadConnectError("CONNECT too large")
        chunk = conn.recv(4096)
        if not chunk:
            raise _BadConnectError("closed before CONNECT")
        data += chunk


def _common_name(conn: ssl.SSLSocket) -> str:
    for rdn in (conn.getpeercert() or {}).get("subject", ()):
        for attribute in rdn:
            if attribute[0] == "commonName":
                return str(attribute[1])
    return ""


def _relay(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (sink, source):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class AlpnFront:
    """A TLS listener on 127.0.0.1 that serves MQTT with ALPN and relays to `upstream`.

    It listens on `port`, or on a free port when `port` is 0.
    """

    def __init__(
        self, *, cert: Path, key: Path, device_ca: Path, upstream: int, port: int = 0
    ) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        context.load_verify_locations(device_ca)
        context.verify_mode = ssl.CERT_REQUIRED
        context.set_alpn_protocols([ALPN_MQTT])
        self._context = context
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="alpn-front", daemon=True)
        self.refused = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(_HANDSHAKE_TIMEOUT)
        try:
            conn = self._context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            self._refuse(raw, "tls", str(exc))
            return
        try:
            if conn.selected_alpn_protocol() != ALPN_MQTT:
                self._refuse(conn, "alpn", f"client did not offer {ALPN_MQTT}")
                return
            thing = _common_name(conn)
            first = _read_connect(conn)
            client_id = connect_client_id(first)
            if client_id != thing:
                self._refuse(conn, "client-id", f"client id {client_id!r} is not {thing!r}")
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream), timeout=5)
        except (OSError, ValueError) as exc:
            self._refuse(conn, "connect", str(exc))
            return
        conn.settimeout(None)
        upstream.settimeout(None)
        upstream.sendall(first)
        back = threading.Thread(target=_relay, args=(upstream, conn), daemon=True)
        back.start()
        _relay(conn, upstream)
        back.join(timeout=5)
        for sock in (conn, upstream):
            with contextlib.suppress(OSError):
                sock.close()

    def _refuse(self, sock: socket.socket, reason: str, detail: str) -> None:
        self.refused += 1
        log.info("alpn_front_refused", reason=reason, detail=detail[:200])
        with contextlib.suppress(OSError):
            sock.close()
