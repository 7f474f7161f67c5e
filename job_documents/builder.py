"""Operator-side building of job documents (pydantic models inside).

`build_document` resolves roots against the catalog, checks every PEM, the
endpoint and the shape of the operation, signs when given a key, serializes
to the compact canonical text CreateJob takes, refuses anything over AWS's
32,768-character limit, and finally runs the device-side validator on the
result: a document this function returns is one devices accept under the
same catalog, region and clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import structlog
from pydantic import ValidationError

from job_documents._canonical import canonical_json, document_hash
from job_documents._catalog import Catalog, CatalogRoot, load_catalog
from job_documents._endpoint import check_ats_endpoint, check_region
from job_documents._models import DOCUMENT_ADAPTER
from job_documents._pem import check_root_validity, inspect_root_pem
from job_documents._signature import Signer, sign_document
from job_documents._values import (
    MAX_DOCUMENT_CHARS,
    MAX_ROOTS,
    SCHEMA_ID,
    BuiltDocument,
    Endpoint,
    Operation,
    PrivateKey,
    ProbeSettings,
    RootInput,
    RootRef,
    TrustedRoot,
)
from job_documents.clock import Clock, SystemClock
from job_documents.errors import (
    CertificateRejected,
    DocumentInvalid,
    DocumentTooLarge,
    Problem,
    UnknownRoot,
)
from job_documents.validator import ValidationPolicy, validate_document

__all__ = ["build_document"]

_log = structlog.get_logger(__name__)

_DEFAULT_PROBE = ProbeSettings()
_DEFAULT_MARGIN = timedelta(days=365)
_SYSTEM_CLOCK = SystemClock()


def _invalid(code: str, message: str, path: str = "") -> DocumentInvalid:
    return DocumentInvalid((Problem(code, message, path),))


def _resolve_roots(
    roots: Sequence[CatalogRoot | RootInput],
    *,
    catalog: Catalog,
    allow_unknown_roots: bool,
    clock: Clock,
    validity_margin: timedelta,
) -> list[TrustedRoot]:
    now = clock.now()
    resolved: list[TrustedRoot] = []
    seen: dict[str, str] = {}
    for item in roots:
        info = inspect_root_pem(item.pem, strict=False)
        check_root_validity(info, now=now, margin=validity_margin)
        known = catalog.by_sha256(info.sha256)
        if isinstance(item, CatalogRoot) and item.sha256 != info.sha256:
            raise CertificateRejected(
                "fingerprint-mismatch",
                f"catalog root {item.name!r} pins {item.sha256} but its PEM is {info.label}",
            )
        if known is not None:
            name = known.name
        elif allow_unknown_roots:
            name = item.name
            if name in catalog.names():
                raise CertificateRejected(
                    "root-name-mismatch",
                    f"{name!r} is the catalog's name for another certificate than "
                    f"{info.label}: choose another name",
                )
        else:
            raise UnknownRoot(
                f"{info.label} (given as {item.name!r}) is not in the catalog {catalog.source}: "
                "check it is the root you mean, then allow unknown roots explicitly "
                "(--allow-unknown-ca)"
            )
        if info.sha256 in seen:
            raise CertificateRejected(
                "duplicate-root",
                f"{info.label} is given twice (as {seen[info.sha256]!r} and {item.name!r}): "
                "list each root once",
            )
        if name in seen.values():
            raise CertificateRejected(
                "duplicate-root", f"two different roots are both named {name!r}: rename one"
            )
        seen[info.sha256] = name
        resolved.append(TrustedRoot(name=name, sha256=info.sha256, pem=info.canonical_pem()))
    return resolved


def _problems_from(exc: ValidationError) -> DocumentInvalid:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = list(error["loc"])
        if loc and loc[0] in {op.value for op in Operation}:
            loc = loc[1:]  # the discriminated union's tag, not a document member
        path = "".join(f"/{part}" for part in loc)
        problems.append(Problem("schema", error["msg"], path))
    return DocumentInvalid(problems)


def _number(value: float) -> float | int:
    # Integers serialize the same in every language; canonical JSON depends on it.
    return int(value) if float(value).is_integer() else value


def build_document(
    *,
    operation: Operation | str,
    region: str,
    campaign: str,
    wave: str,
    endpoint: Endpoint | None = None,
    roots: Sequence[CatalogRoot | RootInput] = (),
    remove: Sequence[RootRef] = (),
    keep_existing: bool = True,
    probe: ProbeSettings = _DEFAULT_PROBE,
    sign_key: PrivateKey | Signer | None = None,
    catalog: Catalog | None = None,
    allow_unknown_roots: bool = False,
    validity_margin: timedelta = _DEFAULT_MARGIN,
    clock: Clock = _SYSTEM_CLOCK,
    key_id: str | None = None,
    extra_regions: frozenset[str] = frozenset(),
) -> BuiltDocument:
    """Build, check, optionally sign and serialize one job document.

    `sign_key` is a private key, or a `Signer` whose key lives elsewhere (AWS KMS);
    either way the signature is verified with its public key before returning.

    `extra_regions` names regions newer than the packaged region list that the
    caller accepts explicitly.

    Raises CertificateRejected, EndpointRejected, UnknownRoot, DocumentTooLarge,
    or DocumentInvalid (shape problems: missing endpoint, wrong counts, bad ids).
    """
    try:
        operation = Operation(operation)
    except ValueError as exc:
        raise _invalid(
            "schema", f"operation {operation!r} is not one of migrate, restore, prune", "/operation"
        ) from exc
    catalog = catalog if catalog is not None else load_catalog()
    check_region(region, extra_regions)
    doc: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "operation": operation.value,
        "campaign": campaign,
        "wave": wave,
        "region": region,
        "probe": {"timeoutSeconds": _number(probe.timeout_seconds), "attempts": probe.attempts},
    }
    if operation is Operation.MIGRATE:
        if endpoint is None:
            raise _invalid("schema", "a migrate document needs the ATS endpoint", "/endpoint")
        if not roots:
            raise _invalid(
                "schema", "a migrate document needs at least one root to trust", "/trust/roots"
            )
        if len(roots) > MAX_ROOTS:
            raise _invalid(
                "schema",
                f"{len(roots)} roots given, at most {MAX_ROOTS} fit one document",
                "/trust/roots",
            )
        if remove:
            raise _invalid(
                "schema", "a migrate document removes nothing: use a prune document", "/trust"
            )
        check_ats_endpoint(endpoint.host, region, extra_regions)
        resolved = _resolve_roots(
            roots,
            catalog=catalog,
            allow_unknown_roots=allow_unknown_roots,
            clock=clock,
            validity_margin=validity_margin,
        )
        doc["endpoint"] = {"host": endpoint.host, "port": endpoint.port}
        if endpoint.alpn:
            doc["endpoint"]["alpn"] = list(endpoint.alpn)
        doc["trust"] = {
            "keepExisting": keep_existing,
            "roots": [{"name": r.name, "sha256": r.sha256, "pem": r.pem} for r in resolved],
        }
    else:
        if endpoint is not None or roots:
            raise _invalid(
                "schema",
                f"a {operation.value} document carries no endpoint and no roots to add",
                "/endpoint" if endpoint is not None else "/trust/roots",
            )
        if not keep_existing:
            raise _invalid(
                "schema",
                f"keep_existing=False applies to migrate only, not to {operation.value}",
                "/trust/keepExisting",
            )
        if operation is Operation.PRUNE:
            if not remove or len(remove) > MAX_ROOTS:
                raise _invalid(
                    "schema",
                    f"a prune document removes 1 to {MAX_ROOTS} roots ({len(remove)} given)",
                    "/trust/remove",
                )
            refs = [{"name": r.name, "sha256": r.sha256} for r in remove]
            for attribute in ("name", "sha256"):
                values = [ref[attribute] for ref in refs]
                if len(set(values)) != len(values):
                    raise CertificateRejected(
                        "duplicate-root", f"a root {attribute} is listed for removal twice"
                    )
            doc["trust"] = {"remove": refs}
        elif remove:
            raise _invalid(
                "schema", "a restore document removes nothing: use a prune document", "/trust"
            )
    try:
        DOCUMENT_ADAPTER.validate_python(doc)
    except ValidationError as exc:
        raise _problems_from(exc) from exc
    if sign_key is not None:
        doc["signature"] = sign_document(doc, sign_key, key_id)
    text = canonical_json(doc).decode("utf-8")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise DocumentTooLarge(len(text), MAX_DOCUMENT_CHARS)
    validate_document(
        text,
        ValidationPolicy(
            region=region,
            catalog=catalog,
            allow_unknown_roots=allow_unknown_roots,
            verify_key=sign_key.public_key() if sign_key is not None else None,
            validity_margin=validity_margin,
            clock=clock,
            extra_regions=extra_regions,
        ),
    )
    built = BuiltDocument(document=doc, text=text, size=len(text), sha256=document_hash(doc))
    _log.info(
        "job_document.built",
        operation=operation.value,
        campaign=campaign,
        wave=wave,
        region=region,
        size=built.size,
        sha256=built.sha256,
        roots=[r["name"] for r in doc.get("trust", {}).get("roots", [])],
        signed=sign_key is not None,
    )
    return built
