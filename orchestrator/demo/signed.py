"""The signed demo (`ca-migrate demo --signed`): a demo signing key the whole run shares.

A fleet whose devices pin a document-signing public key (`signing_public_key`
in device.toml) takes only documents that key signed, and the campaign that
moves it has `signing:`. The demo shows both halves at once: it generates a
fresh Ed25519 key in the run's own directory (deleted with the run; never a key
anyone else holds), points the campaign's `signing:` at the private key, and
has every simulated agent device pin the public key. Each migrate document is
then signed by `start`'s reconciler and verified by every device before it
touches a file.

Invariants: the private key file is written mode 0600 and never printed or
logged; the campaign text changes by one appended `signing:` line.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orchestrator.errors import SpecError, SpecProblem
from orchestrator.reconcile import DocumentKey

__all__ = ["DEMO_KEY_ID", "DemoSigning", "make_demo_signing", "pin_public_key", "with_signing"]

#: The key id the demo's documents carry (signature.keyId).
DEMO_KEY_ID: Final = "ca-migrate-demo"
_SIGNING_KEY = re.compile(r"^signing\s*:", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class DemoSigning:
    """The demo's key pair as files, and the key id documents carry."""

    key_file: Path
    public_key: Path
    key_id: str = DEMO_KEY_ID


def make_demo_signing(directory: Path) -> DemoSigning:
    """A fresh Ed25519 key pair in `directory` (private key 0600, public key PEM)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_file = directory / "demo-signing.key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private)
    public_key = directory / "demo-signing.pub"
    public_key.write_bytes(public)
    return DemoSigning(key_file=key_file, public_key=public_key)


def with_signing(text: str, source: str, signing: DemoSigning) -> str:
    """The campaign text with `signing:` naming the demo key (a campaign that signs: refused)."""
    if _SIGNING_KEY.search(text):
        raise SpecError(
            source,
            (
                SpecProblem(
                    "signing",
                    "the campaign already signs its documents; --signed brings its own demo "
                    "key: drop one of the two",
                ),
            ),
        )
    block = {"key_id": signing.key_id, "key_file": str(signing.key_file)}
    return text.rstrip("\n") + f"\nsigning: {json.dumps(block)}\n"


def pin_public_key(key: DocumentKey, directory: Path) -> Path:
    """The public key of the campaign's own signer, as a PEM file devices can pin.

    A rehearsal of a campaign that signs (a key file, or a KMS key through the
    configured client) pins what `start` would sign with: the simulated devices then
    verify exactly the signatures production devices would.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / "campaign-signing.pub"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path
