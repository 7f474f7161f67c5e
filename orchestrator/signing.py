"""Opening the campaign's document signer: a PEM key file, or an AWS KMS key.

A key file is read and checked here (Ed25519 or ECDSA P-256, unencrypted
PEM); a KMS key is checked by `orchestrator.aws.kms` (ECC_NIST_P256,
SIGN_VERIFY, enabled) in the region its ARN names, else in the campaign's
region. Every refusal is a `SigningKeyError` naming the file or key, never
its content; the CLIs turn it into exit 2.
"""

from __future__ import annotations

import re
from pathlib import Path

from job_documents import load_signing_key
from orchestrator.model import SigningSpec
from orchestrator.reconcile import DocumentKey

__all__ = ["kms_key_region", "open_signer"]

_ARN_REGION = re.compile(r"^arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):")


def kms_key_region(kms_key: str, default: str) -> str:
    """The region a KMS key lives in: its ARN's, else `default` (ids and aliases)."""
    match = _ARN_REGION.match(kms_key)
    return match["region"] if match else default


def open_signer(signing: SigningSpec, region: str, profile: str | None = None) -> DocumentKey:
    """The signer `signing` describes; `SigningKeyError` when it cannot sign."""
    if signing.kms_key is not None:
        from orchestrator.aws.kms import make_kms_client, open_kms_signer

        client = make_kms_client(region=kms_key_region(signing.kms_key, region), profile=profile)
        return open_kms_signer(client, signing.kms_key)
    assert signing.key_file is not None  # noqa: S101 - SigningModel requires one of the two
    return load_signing_key(Path(signing.key_file))
