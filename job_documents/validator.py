"""Device-side validation of a job document: jsonschema and cryptography only.

Nothing on this path imports pydantic (an import-linter contract enforces it),
so constrained devices can run it, and other languages can reproduce it from
the schema file plus the rules below:

1. size: the compact text is at most 32,768 characters;
2. no private key material anywhere in the input (also when JSON escapes such
   as `\u0050RIVATE` spell it);
3. JSON nested at most `MAX_DEPTH` levels (checked on the text before it is
   parsed, code `invalid`), not `null`, with no duplicate member names,
   matching the schema branch of its `operation`;
4. the endpoint is an ATS data endpoint of the document's region (and the
   region is the device's, when the policy names one);
5. every root is one self-signed CA certificate, valid now and for the
   policy's margin, whose SHA-256 is the one stated and is pinned (catalog or
   allow-list) unless unknown roots are allowed; catalog roots carry their
   catalog name; no root or removal appears twice;
6. when the policy has a key, the signature verifies with it.

Every problem is collected: `DocumentInvalid.problems` lists them all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from jsonschema import ValidationError

from job_documents._canonical import canonical_json, document_hash
from job_documents._catalog import Catalog, load_catalog
from job_documents._endpoint import check_ats_endpoint, check_region
from job_documents._pem import check_root_validity, contains_private_key, inspect_root_pem
from job_documents._schema import operation_validators
from job_documents._signature import signature_problem
from job_documents._values import (
    MAX_DOCUMENT_CHARS,
    Endpoint,
    Operation,
    ProbeSettings,
    PublicKey,
    RootRef,
    TrustedRoot,
    ValidatedDocument,
)
from job_documents.clock import Clock, SystemClock
from job_documents.errors import (
    CertificateRejected,
    DocumentInvalid,
    EndpointRejected,
    Problem,
    redact_key_material,
)

__all__ = ["MAX_DEPTH", "ValidationPolicy", "validate_document"]

_SHORT = 48
#: A document is nested 4 levels deep (document, trust, roots, root); JSON deeper than
#: this is refused before any parser or schema walk recurses into it.
MAX_DEPTH = 32
_STRUCTURE = re.compile(r'[\[\]{}"\\]')


@dataclass(frozen=True)
class ValidationPolicy:
    """What a device accepts.

    `catalog` None means the packaged default; `allowed_fingerprints` None means
    the catalog's fingerprints. A `verify_key` makes a signature mandatory.
    """

    region: str | None = None
    catalog: Catalog | None = None
    allowed_fingerprints: frozenset[str] | None = None
    allow_unknown_roots: bool = False
    verify_key: PublicKey | None = None
    require_signature: bool = False
    validity_margin: timedelta = timedelta(days=365)
    clock: Clock = field(default_factory=SystemClock)
    extra_regions: frozenset[str] = frozenset()
    """Regions newer than the packaged list, accepted explicitly."""


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _pointer(parts: Any) -> str:
    return "".join(f"/{str(p).replace('~', '~0').replace('/', '~1')}" for p in parts)


def _short(value: Any) -> str:
    if isinstance(value, str) and "-----BEGIN" in value:
        return "<PEM text>"
    # Redact before cutting, so a cut can never leave a piece of key material short
    # enough to pass for harmless text.
    text = redact_key_material(repr(value))
    return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."


def _too_deep(text: str) -> int | None:
    """The offset where `text` nests brackets deeper than `MAX_DEPTH`, else None.

    One linear pass over the structural characters, strings skipped: nothing here
    recurses, so no input can exhaust the stack.
    """
    depth = 0
    in_string = False
    escaped_until = -1
    for match in _STRUCTURE.finditer(text):
        at = match.start()
        if at < escaped_until:
            continue
        char = text[at]
        if in_string:
            if char == "\\":
                escaped_until = at + 2
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return at
        elif char in "]}":
            depth -= 1
    return None


def _depth_problem(text: str, at: int) -> Problem:
    line = text.count("\n", 0, at) + 1
    return Problem(
        "invalid",
        f"the document nests more than {MAX_DEPTH} levels deep (line {line}); a job document "
        "nests 4: it was not built by this contract",
    )


def _schema_problem(error: ValidationError) -> Problem:
    path = _pointer(error.absolute_path)
    if error.validator == "const" and list(error.absolute_path) == ["schema"]:
        message = (
            f"unsupported schema {_short(error.instance)}: this validator understands "
            "ca-migration/1; update the device software or build the document for it"
        )
    elif error.validator == "pattern":
        message = f"{_short(error.instance)} does not match the pattern {error.validator_value}"
    elif error.validator in ("maxLength", "minLength", "maxItems", "minItems"):
        message = f"{_short(error.instance)}: {error.validator} is {error.validator_value}"
    else:
        message = error.message.replace(repr(error.instance), _short(error.instance))
        if len(message) > 300:  # noqa: PLR2004 - keep one line readable
            message = message[:297] + "..."
    return Problem("schema", message, path)


def _parse(
    raw: str | bytes | Mapping[str, Any], problems: list[Problem]
) -> tuple[bool, Any, str | None]:
    """(parsed?, the document, its text); the text is None when the input failed before parsing."""
    if isinstance(raw, Mapping):
        try:
            text = canonical_json(raw).decode("utf-8")
        except RecursionError:
            problems.append(
                Problem("invalid", f"the document nests more than {MAX_DEPTH} levels deep")
            )
            return False, None, None
        except (TypeError, ValueError) as exc:
            problems.append(Problem("json", f"the document is not JSON-serializable ({exc})"))
            return False, None, None
        at = _too_deep(text)
        if at is not None:
            problems.append(_depth_problem(text, at))
            return False, None, text
        # Re-read from the canonical text: the checks then see exactly JSON types.
        return True, json.loads(text), text
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(Problem("json", "the document is not UTF-8 text"))
            if contains_private_key(raw):
                problems.append(Problem("private-key", "the input contains private key material"))
            return False, None, None
    else:
        text = raw
    at = _too_deep(text)
    if at is not None:
        problems.append(_depth_problem(text, at))
        return False, None, text
    try:
        parsed = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKeyError as exc:
        problems.append(
            Problem(
                "json-duplicate-key",
                f"member {_short(exc.args[0])} appears twice in one object: parsers disagree on "
                "which one wins, so the document is refused",
            )
        )
    except ValueError as exc:
        problems.append(Problem("json", f"the document is not valid JSON ({exc})"))
    else:
        # Python's reader takes NaN, infinities, overflowing numbers and unpaired
        # surrogates, none of which JSON allows or the canonical form (signature,
        # document hash) can encode: refuse them here, before any check uses them.
        try:
            canonical = canonical_json(parsed).decode("utf-8")
        except ValueError:
            problems.append(
                Problem(
                    "json",
                    "the document is not valid JSON: it holds NaN, an infinity, a number too "
                    "large for a double or an unpaired UTF-16 surrogate",
                )
            )
        else:
            if not contains_private_key(text) and contains_private_key(canonical):
                # "\u0050RIVATE KEY-----": the escapes hide it from a text search only.
                problems.append(
                    Problem(
                        "private-key",
                        "the document contains private key material (spelled with JSON "
                        "escapes): it must never be sent; rotate that key and rebuild the "
                        "document from certificates only",
                    )
                )
            return True, parsed, text
    return False, None, text


def _check_size_and_secrets(text: str, problems: list[Problem]) -> None:
    if len(text) > MAX_DOCUMENT_CHARS:
        problems.append(
            Problem(
                "too-large",
                f"the document is {len(text)} characters, over AWS's limit of "
                f"{MAX_DOCUMENT_CHARS}: build it with fewer roots",
            )
        )
    if contains_private_key(text):
        problems.append(
            Problem(
                "private-key",
                "the document contains private key material: it must never be sent; "
                "rotate that key and rebuild the document from certificates only",
            )
        )


def _check_region_and_endpoint(
    doc: Mapping[str, Any], policy: ValidationPolicy, problems: list[Problem]
) -> None:
    region = doc.get("region")
    if not isinstance(region, str):
        return
    try:
        check_region(region, policy.extra_regions)
    except EndpointRejected as exc:
        problems.append(Problem(exc.code, str(exc), "/region"))
        return
    endpoint = doc.get("endpoint")
    if not isinstance(endpoint, Mapping):
        return
    host = endpoint.get("host")
    if not isinstance(host, str):
        return
    try:
        check_ats_endpoint(host, region, policy.extra_regions)
    except EndpointRejected as exc:
        problems.append(Problem(exc.code, str(exc), "/endpoint/host"))


def _check_roots(
    doc: Mapping[str, Any], policy: ValidationPolicy, catalog: Catalog, problems: list[Problem]
) -> None:
    trust = doc.get("trust")
    if not isinstance(trust, Mapping):
        return
    allowed = (
        policy.allowed_fingerprints
        if policy.allowed_fingerprints is not None
        else catalog.fingerprints()
    )
    now = policy.clock.now()
    roots = trust.get("roots")
    seen_sha: dict[str, int] = {}
    seen_name: dict[str, int] = {}
    for index, root in enumerate(roots if isinstance(roots, list) else []):
        if not isinstance(root, Mapping):
            continue
        base = f"/trust/roots/{index}"
        name, stated, pem = root.get("name"), root.get("sha256"), root.get("pem")
        if isinstance(name, str):
            if name in seen_name:
                problems.append(
                    Problem(
                        "duplicate-root",
                        f"root name {name!r} is already used by /trust/roots/{seen_name[name]}",
                        f"{base}/name",
                    )
                )
            seen_name.setdefault(name, index)
        if not isinstance(pem, str):
            continue
        try:
            info = inspect_root_pem(pem, strict=True)
        except CertificateRejected as exc:
            problems.append(Problem(exc.code, str(exc), f"{base}/pem"))
            continue
        try:
            check_root_validity(info, now=now, margin=policy.validity_margin)
        except CertificateRejected as exc:
            problems.append(Problem(exc.code, str(exc), f"{base}/pem"))
        if isinstance(stated, str) and stated != info.sha256:
            problems.append(
                Problem(
                    "fingerprint-mismatch",
                    f"the document states sha256 {_short(stated)} but {info.label} has "
                    f"{info.sha256}: the certificate or its fingerprint was altered",
                    f"{base}/sha256",
                )
            )
        if info.sha256 in seen_sha:
            problems.append(
                Problem(
                    "duplicate-root",
                    f"{info.label} is already listed at /trust/roots/{seen_sha[info.sha256]}",
                    f"{base}/pem",
                )
            )
        seen_sha.setdefault(info.sha256, index)
        if info.sha256 not in allowed and not policy.allow_unknown_roots:
            problems.append(
                Problem(
                    "unknown-root",
                    f"{info.label} is not a pinned root (catalog {catalog.source}): use a "
                    "catalog root, or allow unknown roots explicitly",
                    f"{base}/pem",
                )
            )
        known = catalog.by_sha256(info.sha256)
        if isinstance(name, str):
            if known is not None and known.name != name:
                problems.append(
                    Problem(
                        "root-name-mismatch",
                        f"the catalog calls {info.label} {known.name!r}, not {name!r}",
                        f"{base}/name",
                    )
                )
            elif known is None and name in catalog.names():
                problems.append(
                    Problem(
                        "root-name-mismatch",
                        f"{name!r} is the catalog's name for another certificate, not for "
                        f"{info.label}",
                        f"{base}/name",
                    )
                )
    removals = trust.get("remove")
    seen_ref: set[str] = set()
    for index, ref in enumerate(removals if isinstance(removals, list) else []):
        if not isinstance(ref, Mapping):
            continue
        for key in ("name", "sha256"):
            value = ref.get(key)
            if isinstance(value, str):
                marker = f"{key}={value}"
                if marker in seen_ref:
                    problems.append(
                        Problem(
                            "duplicate-root",
                            f"{key} {value!r} is listed for removal twice",
                            f"/trust/remove/{index}/{key}",
                        )
                    )
                seen_ref.add(marker)


def _check_signature(
    doc: Mapping[str, Any], policy: ValidationPolicy, problems: list[Problem]
) -> bool:
    if policy.verify_key is None:
        if policy.require_signature:
            problems.append(
                Problem(
                    "signature-key",
                    "a signature is required but no verification key is configured: pin the "
                    "operators' public key on the device",
                    "/signature",
                )
            )
        return False
    found = signature_problem(doc, policy.verify_key)
    if found is not None:
        problems.append(Problem(found[0], found[1], "/signature"))
        return False
    return True


def validate_document(
    raw: str | bytes | Mapping[str, Any], policy: ValidationPolicy | None = None
) -> ValidatedDocument:
    """Check a job document against the contract; raise DocumentInvalid listing every problem.

    `raw` is the document text (as CreateJob took it) or an already parsed
    object (as the MQTT jobs topics deliver it).
    """
    policy = policy if policy is not None else ValidationPolicy()
    problems: list[Problem] = []
    parsed, doc, text = _parse(raw, problems)
    if text is not None:
        _check_size_and_secrets(text, problems)
    if not isinstance(doc, dict):
        if parsed:
            problems.append(
                Problem(
                    "schema",
                    f"the document must be a JSON object, not {_json_kind(doc)}: "
                    "build it with `ca-migrate document build`",
                )
            )
        raise DocumentInvalid(problems)
    catalog = policy.catalog if policy.catalog is not None else load_catalog()

    operation = doc.get("operation")
    validators = operation_validators()
    schema_problems: list[Problem] = []
    if isinstance(operation, str) and operation in validators:
        schema_problems = [
            _schema_problem(e)
            for e in sorted(validators[operation].iter_errors(doc), key=lambda e: e.json_path)
        ]
    else:
        schema_problems.append(
            Problem(
                "schema",
                f"operation {_short(operation)} is not one of migrate, restore, prune",
                "/operation",
            )
        )

    semantic: list[Problem] = []
    region = doc.get("region")
    if policy.region is not None and region != policy.region:
        semantic.append(
            Problem(
                "region-mismatch",
                f"the document is for region {_short(region)}, this device is in "
                f"{policy.region}: send it the document built for its region",
                "/region",
            )
        )
    _check_region_and_endpoint(doc, policy, semantic)
    _check_roots(doc, policy, catalog, semantic)
    signed = _check_signature(doc, policy, semantic)

    # A semantic check explains a bad host or PEM better than the schema's pattern does.
    explained = {p.path for p in semantic}
    problems += [p for p in schema_problems if p.path not in explained]
    problems += semantic
    if problems:
        raise DocumentInvalid(problems)
    return _result(doc, signed=signed)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"


def _result(doc: Mapping[str, Any], *, signed: bool) -> ValidatedDocument:
    operation = Operation(doc["operation"])
    endpoint: Endpoint | None = None
    if "endpoint" in doc:
        ep = doc["endpoint"]
        # JSON Schema's "integer" admits 8883.0: hand the device the int it connects to.
        endpoint = Endpoint(host=ep["host"], port=int(ep["port"]), alpn=tuple(ep.get("alpn", ())))
    trust: Mapping[str, Any] = doc.get("trust", {})
    probe = doc["probe"]
    return ValidatedDocument(
        operation=operation,
        campaign=doc["campaign"],
        wave=doc["wave"],
        region=doc["region"],
        endpoint=endpoint,
        roots=tuple(
            TrustedRoot(name=r["name"], sha256=r["sha256"], pem=r["pem"])
            for r in trust.get("roots", ())
        ),
        remove=tuple(RootRef(name=r["name"], sha256=r["sha256"]) for r in trust.get("remove", ())),
        keep_existing=bool(trust.get("keepExisting", True)),
        probe=ProbeSettings(
            timeout_seconds=float(probe["timeoutSeconds"]), attempts=int(probe["attempts"])
        ),
        signed=signed,
        sha256=document_hash(doc),
    )
