"""Errors of the job document contract, one root for the whole package.

```
JobDocumentError
 ├── DocumentInvalid        a document broke the contract; .problems lists every problem
 ├── DocumentTooLarge       the serialized document exceeds AWS's 32,768-character limit
 ├── CertificateRejected    a PEM input is not an acceptable trust anchor (.code says why)
 ├── EndpointRejected       a host is not an ATS data endpoint of the region (.code says why)
 ├── UnknownRoot            a root name or fingerprint is not in the catalog
 ├── CatalogError           a catalog file is unreadable or contradicts itself
 └── SigningKeyError        a signing or verification key is unreadable or of the wrong kind
```

Every message says what is wrong and what to do about it; none carries a PEM
body or key material: `redact_key_material` runs over every message and path
these errors carry, whatever text a hostile document put into them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "CatalogError",
    "CertificateRejected",
    "DocumentInvalid",
    "DocumentTooLarge",
    "EndpointRejected",
    "JobDocumentError",
    "Problem",
    "SigningKeyError",
    "UnknownRoot",
    "redact_key_material",
]

# A PEM block with a body (a header alone, as in "no '-----BEGIN CERTIFICATE-----' block",
# is kept); repr() writes its line breaks as backslash-n.
_PEM_BLOCK = re.compile(
    r"-----BEGIN [A-Z0-9 ]{1,40}-----(?:[A-Za-z0-9+/=\s]|\\[nrt]){20,}"
    r"(?:-----END [A-Z0-9 ]{1,40}-----)?"
)
# Base64 runs this long that mix upper case, lower case and digits are what DER key material
# looks like; SHA-256 fingerprints (lowercase hex), JSON Pointers and host names never do.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{20,}")
REDACTED = "<redacted: looks like key material>"


def _keyish(run: str) -> bool:
    return (
        any(c.isupper() for c in run)
        and any(c.islower() for c in run)
        and any(c.isdigit() for c in run)
        and sum(c.isalnum() for c in run) * 10 >= len(run) * 9
    )


def redact_key_material(text: str) -> str:
    """`text` with PEM blocks and base64 runs that could be key material replaced."""
    text = _PEM_BLOCK.sub("<PEM text>", text)
    return _BASE64_RUN.sub(lambda m: REDACTED if _keyish(m.group()) else m.group(), text)


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a document is invalid.

    `code` is short and machine-readable (e.g. "schema", "pem-not-ca",
    "fingerprint-mismatch"); `path` is a JSON Pointer into the document ("" for
    the whole document); `message` says what is wrong and what to do.
    """

    code: str
    message: str
    path: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", redact_key_material(self.message))
        object.__setattr__(self, "path", redact_key_material(self.path))

    def __str__(self) -> str:
        where = self.path or "/"
        return f"{where}: {self.message} [{self.code}]"


class JobDocumentError(Exception):
    """Root of every error raised by `job_documents`; its text never carries key material."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact_key_material(a) if isinstance(a, str) else a for a in args))


class DocumentInvalid(JobDocumentError):  # noqa: N818 - the contract's name
    """A document broke the contract; `problems` lists every problem found."""

    def __init__(self, problems: tuple[Problem, ...] | list[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid document")

    @property
    def codes(self) -> frozenset[str]:
        """The distinct problem codes, for callers that branch on them."""
        return frozenset(p.code for p in self.problems)


class DocumentTooLarge(JobDocumentError):  # noqa: N818 - the contract's name
    """The serialized document is longer than AWS accepts for a job document."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"the job document is {size} characters, over AWS's limit of {limit}: "
            "put fewer roots in one document (split the migration into several jobs)"
        )


class CertificateRejected(JobDocumentError):  # noqa: N818 - the contract's name
    """A PEM input is not an acceptable trust anchor; `code` names the check that failed."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class EndpointRejected(JobDocumentError):  # noqa: N818 - the contract's name
    """A host is not an ATS data endpoint of the campaign's region and partition."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class UnknownRoot(JobDocumentError):  # noqa: N818 - the contract's name
    """A root name or fingerprint is not in the catalog."""


class CatalogError(JobDocumentError):
    """A catalog file is unreadable, malformed or contradicts its own pins."""


class SigningKeyError(JobDocumentError):
    """A signing or verification key is unreadable or not Ed25519 / ECDSA P-256."""
