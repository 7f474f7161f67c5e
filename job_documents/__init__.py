"""The job document contract between operators and devices: schema, catalog, checks.

Everything public is importable from here. The validating half (schema,
catalog, PEM/endpoint/signature checks, `validate_document`) needs jsonschema
and cryptography only; `build_document` (pydantic models inside) is loaded on
first use, so a device that only validates never imports pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from job_documents._canonical import canonical_json, document_hash
from job_documents._catalog import Catalog, CatalogRoot, default_catalog_path, load_catalog
from job_documents._endpoint import (
    check_ats_endpoint,
    check_region,
    known_regions,
    partition_suffix,
)
from job_documents._legacy import LegacyEndpoint, legacy_endpoint
from job_documents._pem import normalize_fingerprint, sha256_fingerprint
from job_documents._schema import load_schema, schema_path
from job_documents._signature import (
    ALGORITHMS,
    Signer,
    algorithm_for,
    load_signing_key,
    load_verify_key,
    sign_document,
)
from job_documents._values import (
    ALPN_MQTT_CA,
    MAX_DOCUMENT_CHARS,
    MAX_ROOTS,
    SCHEMA_ID,
    BuiltDocument,
    Endpoint,
    Operation,
    PrivateKey,
    ProbeSettings,
    PublicKey,
    RootInput,
    RootRef,
    TrustedRoot,
    ValidatedDocument,
)
from job_documents.clock import Clock, ManualClock, SystemClock
from job_documents.errors import (
    CatalogError,
    CertificateRejected,
    DocumentInvalid,
    DocumentTooLarge,
    EndpointRejected,
    JobDocumentError,
    Problem,
    SigningKeyError,
    UnknownRoot,
)
from job_documents.validator import ValidationPolicy, validate_document

if TYPE_CHECKING:
    from job_documents.builder import build_document

__all__ = [
    "ALGORITHMS",
    "ALPN_MQTT_CA",
    "MAX_DOCUMENT_CHARS",
    "MAX_ROOTS",
    "SCHEMA_ID",
    "BuiltDocument",
    "Catalog",
    "CatalogError",
    "CatalogRoot",
    "CertificateRejected",
    "Clock",
    "DocumentInvalid",
    "DocumentTooLarge",
    "Endpoint",
    "EndpointRejected",
    "JobDocumentError",
    "LegacyEndpoint",
    "ManualClock",
    "Operation",
    "PrivateKey",
    "ProbeSettings",
    "Problem",
    "PublicKey",
    "RootInput",
    "RootRef",
    "Signer",
    "SigningKeyError",
    "SystemClock",
    "TrustedRoot",
    "UnknownRoot",
    "ValidatedDocument",
    "ValidationPolicy",
    "algorithm_for",
    "build_document",
    "canonical_json",
    "check_ats_endpoint",
    "check_region",
    "default_catalog_path",
    "document_hash",
    "known_regions",
    "legacy_endpoint",
    "load_catalog",
    "load_schema",
    "load_signing_key",
    "load_verify_key",
    "normalize_fingerprint",
    "partition_suffix",
    "schema_path",
    "sha256_fingerprint",
    "sign_document",
    "validate_document",
]


def __getattr__(name: str) -> Any:
    if name == "build_document":
        from job_documents.builder import build_document

        return build_document
    raise AttributeError(f"module 'job_documents' has no attribute {name!r}")
