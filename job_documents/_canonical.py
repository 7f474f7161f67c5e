"""The canonical JSON form: what signatures cover and document hashes name.

Sorted keys, no whitespace (separators "," and ":"), non-ASCII kept as UTF-8,
no NaN or infinities. The documents this package builds are pure ASCII and use
integers wherever a number is integral, so other languages reproduce the same
bytes with an ordinary sorted-keys compact serializer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["canonical_json", "document_hash"]


def canonical_json(obj: Any) -> bytes:
    """`obj` as canonical JSON bytes (sorted keys, compact, UTF-8)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def document_hash(document: Mapping[str, Any] | str) -> str:
    """SHA-256 (lowercase hex) of the canonical form; a str is parsed as JSON first."""
    parsed: Any = json.loads(document) if isinstance(document, str) else document
    return hashlib.sha256(canonical_json(parsed)).hexdigest()
