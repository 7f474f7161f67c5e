"""Signing job documents with an asymmetric AWS KMS key: the private key never leaves KMS.

The key must be `ECC_NIST_P256` with usage `SIGN_VERIFY` and enabled; it signs
with `ECDSA_SHA_256`, which is exactly what a device verifies for a document
whose algorithm is `ECDSA-P256-SHA256` (a DER ECDSA signature over SHA-256 of
the canonical document without its `signature` member). KMS takes a RAW message
of at most 4,096 bytes (it hashes it itself); a longer document is hashed here
and sent as `MessageType=DIGEST`, which KMS signs without hashing again. The
result is the same signature either way.

`open_kms_signer` checks the key (DescribeKey) and fetches its public key
(GetPublicKey) once; every refusal is a `SigningKeyError` that names the key
and says what to do. The KMS endpoint is boto3's: `AWS_ENDPOINT_URL_KMS` (or
the shared config's `endpoint_url` for kms) points it elsewhere, e.g. at a
local KMS in tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, Protocol

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from job_documents import PublicKey, SigningKeyError

__all__ = ["KmsApi", "KmsSigner", "make_kms_client", "open_kms_signer"]

log = structlog.get_logger(__name__)

KEY_SPEC: Final = "ECC_NIST_P256"
SIGNING_ALGORITHM: Final = "ECDSA_SHA_256"
#: KMS Sign takes a RAW message of at most this many bytes; longer ones go as a digest.
MAX_RAW_MESSAGE: Final = 4096

_CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 10},
    user_agent_extra="ca-migrate",
    connect_timeout=10,
    read_timeout=30,
)


class KmsApi(Protocol):
    """The three KMS calls the signer makes (boto3's "kms" client has them)."""

    def describe_key(self, *, KeyId: str) -> Any:  # noqa: N803 - boto3's parameter names
        ...

    def get_public_key(self, *, KeyId: str) -> Any:  # noqa: N803
        ...

    def sign(self, *, KeyId: str, Message: bytes, MessageType: str, SigningAlgorithm: str) -> Any:  # noqa: N803
        ...


def make_kms_client(*, region: str, profile: str | None = None) -> KmsApi:
    """A boto3 "kms" client of `region` (endpoint from boto3's own configuration)."""
    session = boto3.Session(profile_name=profile, region_name=region)
    client: KmsApi = session.client("kms", config=_CONFIG)
    return client


@contextmanager
def _translate(operation: str, key: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", "")
        if code == "NotFoundException":
            hint = "check the key id, ARN or alias and the campaign's region"
        elif code in {"AccessDeniedException", "AccessDenied"}:
            hint = f"grant kms:{operation.removesuffix('Key')} on this key to the caller"
        elif code in {"DisabledException", "KMSInvalidStateException"}:
            hint = "enable the key (aws kms enable-key) or choose another"
        else:
            hint = "check the key, the credentials and the region"
        raise SigningKeyError(
            f"AWS KMS {operation} of {key} failed ({code}: {message}): {hint}"
        ) from exc
    except BotoCoreError as exc:
        raise SigningKeyError(
            f"AWS KMS {operation} of {key} could not be sent ({exc}): check the network, the "
            "credentials and AWS_ENDPOINT_URL_KMS"
        ) from exc


class KmsSigner:
    """A `job_documents.Signer` whose private key stays in AWS KMS."""

    def __init__(self, client: KmsApi, key: str) -> None:
        self._kms = client
        self.key = key
        self.key_arn = key
        self._public: PublicKey | None = None

    def public_key(self) -> PublicKey:
        if self._public is None:
            self.check()
        assert self._public is not None  # noqa: S101 - check() sets it or raises
        return self._public

    def check(self) -> None:
        """Refuse a key that cannot sign what devices verify; fetch its public key.

        Refused (SigningKeyError): a missing or disabled key, a key that is not
        ECC_NIST_P256, not SIGN_VERIFY, or does not offer ECDSA_SHA_256.
        """
        key = self.key
        with _translate("DescribeKey", key):
            meta = self._kms.describe_key(KeyId=key)["KeyMetadata"]
        spec = meta.get("KeySpec") or meta.get("CustomerMasterKeySpec")
        if spec != KEY_SPEC:
            raise SigningKeyError(
                f"KMS key {key} is {spec}, not {KEY_SPEC}: devices verify ECDSA P-256 "
                "signatures; create one with aws kms create-key --key-spec ECC_NIST_P256 "
                "--key-usage SIGN_VERIFY"
            )
        if meta.get("KeyUsage") != "SIGN_VERIFY":
            raise SigningKeyError(
                f"KMS key {key} has usage {meta.get('KeyUsage')}, not SIGN_VERIFY: it cannot "
                "sign; create a key with --key-usage SIGN_VERIFY"
            )
        if meta.get("KeyState", "Enabled") != "Enabled" or meta.get("Enabled") is False:
            raise SigningKeyError(
                f"KMS key {key} is {meta.get('KeyState')}: enable it (aws kms enable-key) or "
                "use another key"
            )
        if SIGNING_ALGORITHM not in meta.get("SigningAlgorithms", [SIGNING_ALGORITHM]):
            raise SigningKeyError(f"KMS key {key} does not offer {SIGNING_ALGORITHM}")
        arn = str(meta.get("Arn") or key)
        with _translate("GetPublicKey", key):
            der = self._kms.get_public_key(KeyId=arn)["PublicKey"]
        public = serialization.load_der_public_key(der)
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
            public.curve, ec.SECP256R1
        ):
            raise SigningKeyError(f"KMS key {key}'s public key is not an ECDSA P-256 key")
        self.key_arn, self._public = arn, public
        log.info("kms-key-opened", key=key, arn=arn)

    def sign(self, payload: bytes) -> bytes:
        if len(payload) <= MAX_RAW_MESSAGE:
            message, message_type = payload, "RAW"
        else:
            message, message_type = hashlib.sha256(payload).digest(), "DIGEST"
        with _translate("Sign", self.key):
            answer = self._kms.sign(
                KeyId=self.key_arn,
                Message=message,
                MessageType=message_type,
                SigningAlgorithm=SIGNING_ALGORITHM,
            )
        log.info("kms-signed", key=self.key_arn, message_type=message_type, size=len(payload))
        signature: bytes = answer["Signature"]
        return signature


def open_kms_signer(client: KmsApi, key: str) -> KmsSigner:
    """A signer for `key`, checked (`KmsSigner.check`) before anything is signed."""
    signer = KmsSigner(client, key)
    signer.check()
    return signer
