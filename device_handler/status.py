"""statusDetails as AWS IoT Jobs accepts them.

AWS limits: at most 10 pairs; keys 1-128 of `[a-zA-Z0-9:_-]`; values 1-1024
characters, none of them control characters. `details()` enforces all of it
(drops empty values, replaces control characters, truncates long values such
as TLS error messages) so no report is ever refused for its shape.

Keys this handler uses (documented in docs/device-handler.md): step,
operation, endpoint, bundleSha256, documentSha256, probeMs, reconnectMs,
totalMs, reason, message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["MAX_KEYS", "MAX_VALUE", "details"]

MAX_KEYS = 10
MAX_VALUE = 1024
_KEY = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def details(pairs: Mapping[str, object | None]) -> dict[str, str]:
    """A statusDetails map within AWS limits; None values are left out, order kept."""
    out: dict[str, str] = {}
    for key, value in pairs.items():
        if value is None or not _KEY.fullmatch(key):
            continue
        text = _CONTROL.sub(" ", str(value)).strip()
        if not text:
            continue
        if len(text) > MAX_VALUE:
            text = text[: MAX_VALUE - 3] + "..."
        out[key] = text
        if len(out) == MAX_KEYS:
            break
    return out
