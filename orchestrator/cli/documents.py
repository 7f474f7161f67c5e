"""`ca-migrate ca ...` and `ca-migrate document ...`: the root catalog and job documents.

Exit codes: 0 ok; 2 invalid input (unknown root, rejected certificate or
endpoint, invalid document, unreadable file); 1 anything else. Documents go to
stdout (or --output-file FILE) exactly as CreateJob takes them; sizes, summaries and
problems go to stderr, one line each.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from job_documents import (
    Catalog,
    CatalogRoot,
    DocumentInvalid,
    Endpoint,
    JobDocumentError,
    Operation,
    PrivateKey,
    ProbeSettings,
    RootInput,
    RootRef,
    Signer,
    ValidationPolicy,
    build_document,
    load_catalog,
    load_signing_key,
    load_verify_key,
    normalize_fingerprint,
    sha256_fingerprint,
    validate_document,
)
from job_documents.errors import CertificateRejected
from orchestrator.cli._output import output_format, write_output_file
from orchestrator.cli.exits import EXIT_INVALID
from orchestrator.errors import UsageError

__all__ = ["ca_app", "document_app"]

_MAX_INPUT = 1024 * 1024

ca_app = typer.Typer(help="The catalog of known root CAs.", no_args_is_help=True)
document_app = typer.Typer(help="Build and validate migration job documents.", no_args_is_help=True)


class OutputFormat(StrEnum):
    """How `ca list` prints (`table` is the older name of `text`)."""

    TEXT = "text"
    TABLE = "table"
    JSON = "json"


DocumentOutputOption = Annotated[
    str, typer.Option("--output", "-o", help="Format of what is printed: json (the only one).")
]


def _json_only(value: str) -> None:
    """Documents and schemas are JSON: `-o json` is accepted, a file name names --output-file."""
    try:
        output_format(value, ("json",))
    except UsageError as exc:
        _fail(str(exc))


def _write(path: Path, text: str) -> None:
    try:
        write_output_file(path, text)
    except UsageError as exc:
        _fail(str(exc))


CatalogOption = Annotated[
    Path | None,
    typer.Option(
        "--catalog",
        help="A catalog.json of known roots (e.g. the sandbox's); default: the packaged "
        "Amazon Trust Services roots.",
        dir_okay=True,
    ),
]
AllowUnknownOption = Annotated[
    bool,
    typer.Option(
        "--allow-unknown-ca", help="Accept roots that are not in the catalog (explicit opt-in)."
    ),
]
MarginOption = Annotated[
    int,
    typer.Option(
        "--margin-days",
        min=0,
        max=36500,  # a century: past it the date overflows, and no root is issued for longer
        help="Every root must stay valid at least this many days from now.",
    ),
]
AllowRegionOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-region",
        help="Accept this region although the packaged region list does not know it (a region "
        "AWS opened since); repeat.",
    ),
]


def _fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _catalog(path: Path | None) -> Catalog:
    try:
        return load_catalog(path)
    except JobDocumentError as exc:
        _fail(str(exc))


@ca_app.command("list")
def list_roots(
    catalog: CatalogOption = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", "-O", help="text (or table) or json.")
    ] = OutputFormat.TEXT,
) -> None:
    """List the known roots: name, key type, not-after date, SHA-256 fingerprint."""
    known = _catalog(catalog)
    if known.sandbox:
        print(f"note: {known.source} is a sandbox catalog, not for production", file=sys.stderr)
    if output is OutputFormat.JSON:
        rows = [
            {
                "name": r.name,
                "keyType": r.key_type,
                "notAfter": r.not_after.isoformat(),
                "sha256": r.sha256,
                "subject": r.subject,
            }
            for r in known.roots
        ]
        print(json.dumps({"source": known.source, "sandbox": known.sandbox, "roots": rows}))
        return
    headers = ("NAME", "KEY", "NOT AFTER", "SHA256")
    table = [(r.name, r.key_type, f"{r.not_after:%Y-%m-%d}", r.sha256) for r in known.roots]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    for row in (headers, *table):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    if known.sandbox:
        print(f"note: {known.source} is a sandbox catalog, not for production", file=sys.stderr)


def _root_from(value: str, catalog: Catalog) -> CatalogRoot | RootInput:
    path = Path(value)
    if path.is_file():
        try:
            pem = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"cannot read {path} as a PEM text file: {exc}")
        return RootInput(name=path.stem, pem=pem)
    if value.endswith((".pem", ".crt")):
        _fail(f"{value}: no such file")
    return catalog.get(value)


def _ref_from(value: str, catalog: Catalog) -> RootRef:
    path = Path(value)
    if path.is_file():
        try:
            return RootRef(name=path.stem, sha256=sha256_fingerprint(path.read_bytes()))
        except (OSError, ValueError) as exc:
            _fail(f"cannot read a certificate from {path}: {exc}")
    name, sep, given = value.partition("=")
    if sep:
        fingerprint = normalize_fingerprint(given)
        if fingerprint is None:
            _fail(f"{value!r}: after '=' give the root's SHA-256 (64 hex digits)")
        return RootRef(name=name, sha256=fingerprint)
    fingerprint = normalize_fingerprint(value)
    if fingerprint is not None:
        known = catalog.by_sha256(fingerprint)
        name = known.name if known is not None else f"root-{fingerprint[:12]}"
        return RootRef(name=name, sha256=fingerprint)
    root = catalog.get(value)
    return RootRef(name=root.name, sha256=root.sha256)


def _document_key(
    sign_key: Path | None, kms_key: str | None, region: str, profile: str | None
) -> PrivateKey | Signer | None:
    """The key of --sign-key or --kms-key (SigningKeyError when it cannot sign)."""
    if sign_key is not None and kms_key is not None:
        _fail("give --sign-key or --kms-key, not both")
    if sign_key is not None:
        return load_signing_key(sign_key)
    if kms_key is None:
        return None
    from orchestrator.aws.kms import make_kms_client, open_kms_signer
    from orchestrator.signing import kms_key_region

    client = make_kms_client(region=kms_key_region(kms_key, region), profile=profile)
    return open_kms_signer(client, kms_key)


@document_app.command("build")
def build(
    ctx: typer.Context,
    region: Annotated[
        str | None, typer.Option("--region", help="The campaign's AWS region.")
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", help="The ATS data endpoint host (migrate)."),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="8883, or 443 (ALPN x-amzn-mqtt-ca).")] = 8883,
    ca: Annotated[
        list[str] | None,
        typer.Option(
            "--ca", help="A catalog root name or a PEM file; repeat. Default: every catalog root."
        ),
    ] = None,
    operation: Annotated[
        Operation, typer.Option("--operation", help="migrate, restore or prune.")
    ] = Operation.MIGRATE,
    remove: Annotated[
        list[str] | None,
        typer.Option(
            "--remove",
            help="prune: a root to drop (catalog name, SHA-256, NAME=SHA256 or PEM file); repeat.",
        ),
    ] = None,
    campaign: Annotated[str, typer.Option("--campaign", help="Campaign id.")] = "manual",
    wave: Annotated[str, typer.Option("--wave", help="Wave id.")] = "manual",
    no_keep_existing: Annotated[
        bool,
        typer.Option("--no-keep-existing", help="Replace the device's trust instead of adding."),
    ] = False,
    probe_timeout: Annotated[
        float, typer.Option("--probe-timeout", help="Seconds per probe attempt.")
    ] = 10.0,
    probe_attempts: Annotated[int, typer.Option("--probe-attempts", help="Probe attempts.")] = 3,
    catalog: CatalogOption = None,
    allow_unknown_ca: AllowUnknownOption = False,
    sign_key: Annotated[
        Path | None,
        typer.Option("--sign-key", help="Sign with this Ed25519 or ECDSA P-256 private key (PEM)."),
    ] = None,
    kms_key: Annotated[
        str | None,
        typer.Option(
            "--kms-key",
            help="Sign with this AWS KMS key (id, ARN or alias/NAME; ECC_NIST_P256, SIGN_VERIFY).",
        ),
    ] = None,
    key_id: Annotated[
        str | None, typer.Option("--key-id", help="Key id recorded in the signature.")
    ] = None,
    margin_days: MarginOption = 365,
    output_file: Annotated[
        Path | None, typer.Option("--output-file", help="Write the document here, not stdout.")
    ] = None,
    allow_region: AllowRegionOption = None,
    output: DocumentOutputOption = "json",
) -> None:
    """Build a job document; JSON to stdout (or --output-file), its size on stderr."""
    _json_only(output)
    region = region or getattr(ctx.obj, "region", None)
    if not region:
        _fail("give the campaign's region with --region (or AWS_REGION)")
    known = _catalog(catalog)
    try:
        roots: list[CatalogRoot | RootInput] = []
        if operation is Operation.MIGRATE:
            roots = [_root_from(v, known) for v in ca] if ca else list(known.roots)
        elif ca:
            _fail(f"--ca applies to migrate, not {operation.value}")
        if endpoint is not None and operation is not Operation.MIGRATE:
            _fail(f"--endpoint applies to migrate, not {operation.value}")
        if operation is Operation.MIGRATE and endpoint is None:
            _fail("a migrate document needs --endpoint <prefix>-ats.iot.<region>.amazonaws.com")
        if port not in (8883, 443):
            _fail(f"--port must be 8883 or 443 (with ALPN x-amzn-mqtt-ca), not {port}")
        refs = [_ref_from(v, known) for v in remove or ()]
        key = _document_key(sign_key, kms_key, region, getattr(ctx.obj, "profile", None))
        built = build_document(
            operation=operation,
            region=region,
            campaign=campaign,
            wave=wave,
            endpoint=Endpoint(endpoint, port) if endpoint is not None else None,
            roots=roots,
            remove=refs,
            keep_existing=not no_keep_existing,
            probe=ProbeSettings(timeout_seconds=probe_timeout, attempts=probe_attempts),
            sign_key=key,
            key_id=key_id,
            catalog=known,
            allow_unknown_roots=allow_unknown_ca,
            validity_margin=timedelta(days=margin_days),
            extra_regions=frozenset(allow_region or ()),
        )
    except DocumentInvalid as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        raise typer.Exit(EXIT_INVALID) from exc
    except CertificateRejected as exc:
        _fail(f"{exc} [{exc.code}]")
    except JobDocumentError as exc:
        _fail(str(exc))
    if output_file is None:
        print(built.text)
    else:
        _write(output_file, built.text + "\n")
    print(
        f"size: {built.size} of 32768 characters; sha256 {built.sha256}"
        + (f"; written to {output_file}" if output_file is not None else ""),
        file=sys.stderr,
    )


@document_app.command("validate")
def validate(
    file: Annotated[str, typer.Argument(help="The document file, or - for stdin.")],
    region: Annotated[
        str | None, typer.Option("--region", help="Refuse documents for another region.")
    ] = None,
    catalog: CatalogOption = None,
    verify_key: Annotated[
        Path | None,
        typer.Option("--verify-key", help="Require a signature verifying with this public key."),
    ] = None,
    allow_unknown_ca: AllowUnknownOption = False,
    margin_days: MarginOption = 365,
    allow_region: AllowRegionOption = None,
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="text (a summary line; problems on stderr) or json (one object on stdout).",
        ),
    ] = "text",
) -> None:
    """Check a document as a device would; exit 0 if valid, 2 with one line per problem."""
    try:
        as_json = output_format(output) == "json"
    except UsageError as exc:
        _fail(str(exc))
    # Read at most 1 MiB: a document is at most 32,768 characters, and a larger input is
    # refused without holding it whole.
    raw = _read_bounded(file)
    known = _catalog(catalog)
    try:
        key = load_verify_key(verify_key) if verify_key is not None else None
        result = validate_document(
            raw,
            ValidationPolicy(
                region=region,
                catalog=known,
                allow_unknown_roots=allow_unknown_ca,
                verify_key=key,
                validity_margin=timedelta(days=margin_days),
                extra_regions=frozenset(allow_region or ()),
            ),
        )
    except DocumentInvalid as exc:
        for problem in exc.problems:
            print(f"invalid: {problem}", file=sys.stderr)
        if as_json:
            problems = [
                {"code": p.code, "path": p.path, "message": p.message} for p in exc.problems
            ]
            print(json.dumps({"valid": False, "problems": problems}, sort_keys=True))
        raise typer.Exit(EXIT_INVALID) from exc
    except JobDocumentError as exc:
        _fail(str(exc))
    if as_json:
        print(
            json.dumps(
                {
                    "valid": True,
                    "operation": result.operation.value,
                    "campaign": result.campaign,
                    "wave": result.wave,
                    "region": result.region,
                    "endpoint": (
                        {"host": result.endpoint.host, "port": result.endpoint.port}
                        if result.endpoint is not None
                        else None
                    ),
                    "roots": len(result.roots),
                    "remove": len(result.remove),
                    "keep_existing": result.keep_existing,
                    "signed": result.signed,
                    "sha256": result.sha256,
                },
                sort_keys=True,
            )
        )
        return
    target = (
        f" endpoint={result.endpoint.host}:{result.endpoint.port}"
        if result.endpoint is not None
        else ""
    )
    print(
        f"valid: {result.operation.value} campaign={result.campaign} wave={result.wave} "
        f"region={result.region}{target} roots={len(result.roots)} remove={len(result.remove)} "
        f"keep-existing={'yes' if result.keep_existing else 'no'} "
        f"signed={'yes' if result.signed else 'no'} sha256={result.sha256}"
    )


def _read_bounded(file: str) -> bytes:
    """At most 1 MiB of `file` (or stdin for -): a document is 32,768 characters at most."""
    if file == "-":
        raw = sys.stdin.buffer.read(_MAX_INPUT + 1)
    else:
        try:
            with Path(file).open("rb") as handle:
                raw = handle.read(_MAX_INPUT + 1)
        except OSError as exc:
            _fail(f"cannot read {file}: {exc.strerror}")
    if len(raw) > _MAX_INPUT:
        _fail(f"{file} is over 1 MiB; a job document is at most 32,768 characters [too-large]")
    return raw


@document_app.command("wrap")
def wrap(
    file: Annotated[str, typer.Argument(help="The ca-migration/1 document file, or - for stdin.")],
    handler_path: Annotated[
        str, typer.Option(help="The installed ca-migrate-handler.sh on the device (absolute).")
    ] = "/opt/ca-migrate/handlers/ca-migrate-handler.sh",
    device_toml: Annotated[
        str, typer.Option(help="The handler's device.toml on the device (absolute).")
    ] = "/etc/ca-migrate/device.toml",
    config_path: Annotated[
        str, typer.Option(help="Device Client's configuration on the device (absolute).")
    ] = "/etc/.aws-iot-device-client/aws-iot-device-client.conf",
    allow_stderr: Annotated[int, typer.Option(help="The step's allowStdErr.")] = 0,
    run_as_user: Annotated[str, typer.Option(help="The step's runAsUser.")] = "root",
    output_file: Annotated[
        Path | None, typer.Option("--output-file", help="Write the document here, not stdout.")
    ] = None,
    output: DocumentOutputOption = "json",
) -> None:
    """Wrap a document in AWS IoT Device Client's runHandler job document (its 1.0 schema).

    What a campaign wave with `device_runtime: device-client` carries; the embedded document
    is not re-checked here (`document validate` does that).
    """
    from job_documents import BuiltDocument, canonical_json, document_hash
    from orchestrator.device_client_docs import WrappedTooLargeError, wrap_for_device_client
    from orchestrator.spec_device_client import DeviceClientModel

    _json_only(output)
    raw = _read_bounded(file)
    try:
        inner: object = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        _fail(f"{file} is not JSON (or is nested too deeply): {str(exc)[:200]}")
    if not isinstance(inner, dict) or inner.get("schema") != "ca-migration/1":
        _fail(f"{file} is not a ca-migration/1 document (build one with `document build`)")
    try:
        settings = DeviceClientModel(
            handler_path=handler_path,
            device_toml=device_toml,
            config_path=config_path,
            allow_stderr=allow_stderr,
            run_as_user=run_as_user,
        ).to_settings()
    except ValueError as exc:
        _fail(f"invalid Device Client settings: {exc}")
    text = canonical_json(inner).decode("utf-8")
    built = BuiltDocument(document=inner, text=text, size=len(text), sha256=document_hash(inner))
    try:
        wrapped = wrap_for_device_client(built, settings)
    except WrappedTooLargeError as exc:
        _fail(str(exc))
    if output_file is None:
        print(wrapped.text)
    else:
        _write(output_file, wrapped.text + "\n")
    print(
        f"size: {wrapped.size} of 32768 characters (the embedded document: {built.size}); "
        f"sha256 {wrapped.sha256}" + (f"; written to {output_file}" if output_file else ""),
        file=sys.stderr,
    )


@document_app.command("schema")
def schema(
    output_file: Annotated[
        Path | None, typer.Option("--output-file", help="Write the schema here, not stdout.")
    ] = None,
    output: DocumentOutputOption = "json",
) -> None:
    """Print the ca-migration/1 JSON Schema (draft 2020-12) devices validate against."""
    from job_documents import schema_path

    _json_only(output)
    text = schema_path().read_text(encoding="utf-8")
    if output_file is None:
        sys.stdout.write(text)
    else:
        _write(output_file, text)
        print(f"schema written to {output_file}", file=sys.stderr)
