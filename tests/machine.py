"""What a test needs of the machine: the marks that skip it, in the skip policy's words."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

#: mosquitto runs the sandbox's MQTT listeners (`make test` installs it from Debian).
NEEDS_MOSQUITTO = pytest.mark.skipif(
    shutil.which("mosquitto") is None, reason="mosquitto is not installed"
)


def resolves_to_loopback(host: str) -> bool:
    """Whether `host` (a sandbox endpoint's AWS-shaped name) resolves to 127.0.0.1 here."""
    try:
        return "127.0.0.1" in {a[4][0] for a in socket.getaddrinfo(host, 8883)}
    except OSError:
        return False


def needs_loopback_name(host: str) -> pytest.MarkDecorator:
    """Skip unless `host` resolves to 127.0.0.1, as it does under scripts/env.sh."""
    return pytest.mark.skipif(
        not resolves_to_loopback(host),
        reason="sandbox host names do not resolve to 127.0.0.1: run under scripts/env.sh",
    )


#: The AWS IoT Device SDK resolves the sandbox's AWS-shaped names only under nss_wrapper.
NEEDS_NSS_WRAPPER = pytest.mark.skipif(
    "libnss_wrapper" not in os.environ.get("LD_PRELOAD", ""),
    reason="the SDK resolves the sandbox's AWS-shaped names only under nss_wrapper: "
    "run through `source scripts/env.sh`",
)
