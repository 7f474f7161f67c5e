"""The region a request was signed for, read from its SigV4 credential scope.

AWS tells regions apart by host (`iot.us-east-1.amazonaws.com`); a sandbox serves
every region on one local port, so it reads the region the client signed the
request for instead: the third part of the credential scope
`<key id>/<date>/<region>/<service>/aws4_request`, found in the `Authorization`
header (`AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`) or, for
a presigned URL, in the `X-Amz-Credential` query parameter. The signature itself is
not checked (the sandbox takes any credentials).

Pure: strings in, a region name or None out; never raises on hostile input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qs

__all__ = ["signed_region"]

_SCOPE: Final = re.compile(
    r"^[^/\s]{1,256}/(?P<date>\d{8})/(?P<region>[a-z0-9-]{1,32})/(?P<service>[a-z0-9-]{1,64})"
    r"/aws4_request$"
)
_CREDENTIAL: Final = re.compile(r"Credential=([^,\s]{1,512})")
#: Headers longer than this are not parsed (botocore's are ~200 characters).
_MAX_HEADER: Final = 4096


def _region_of(scope: str) -> str | None:
    match = _SCOPE.match(scope.strip())
    return None if match is None else match.group("region")


def signed_region(headers: Mapping[str, str], query: str = "") -> str | None:
    """The region of the request's SigV4 credential scope; None when it carries none.

    `headers` are keyed in lower case (as the sandbox's HTTP handler passes them).
    """
    authorization = headers.get("authorization", "")
    if authorization and len(authorization) <= _MAX_HEADER:
        found = _CREDENTIAL.search(authorization)
        if found is not None:
            return _region_of(found.group(1))
    if query and len(query) <= _MAX_HEADER:
        values = parse_qs(query).get("X-Amz-Credential")
        if values:
            return _region_of(values[-1])
    return None
