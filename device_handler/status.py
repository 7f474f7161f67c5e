r"""statusDetails as AWS IoT Jobs accepts them.

AWS limits: at most 10 pairs; keys 1-128 of `[a-zA-Z0-9:_-]`; values 1-1024
characters matching `[^\p{C}]+` (no control, format, surrogate, private-use or
unassigned character). `details()` enforces all of it
(drops empty values, replaces control characters, truncates long values such
as TLS error messages) so no report is ever refused for its shape.

Keys this handler uses (documented in docs/device-handler.md): step,
operation, endpoint, bundleSha256, documentSha256, probeMs, reconnectMs,
totalMs, reason, message.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

__all__ = ["MAX_KEYS", "MAX_VALUE", "details"]

MAX_KEYS = 10
MAX_VALUE = 1024
_KEY = re.compile(r"[a-zA-Z0-9:_-]{1,128}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Keys already found valid: a handler reports the same few keys thousands of times.
_GOOD_KEYS: set[str] = set()
_GOOD_KEYS_LIMIT = 256


def details(pairs: Mapping[str, object | None]) -> dict[str, str]:
    """A statusDetails map within AWS limits; None values are left out, order kept."""
    out: dict[str, str] = {}
    for key, value in pairs.items():
        if value is None:
            continue
        if key not in _GOOD_KEYS:
            if not _KEY.fullmatch(key):
                continue
            if len(_GOOD_KEYS) < _GOOD_KEYS_LIMIT:
                _GOOD_KEYS.add(key)
        text = _printable(value if type(value) is str else str(value))
        if not text:
            continue
        if len(text) > MAX_VALUE:
            text = text[: MAX_VALUE - 3] + "..."
        out[key] = text
        if len(out) == MAX_KEYS:
            break
    return out


def _printable(text: str) -> str:
    """`text` with every character of Unicode category C (what AWS refuses) made a space."""
    if text.isascii():
        if text.isprintable():  # the usual case: no control character to replace
            return text.strip()
        return _CONTROL.sub(" ", text).strip()
    return "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text).strip()
