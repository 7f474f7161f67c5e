"""Building the campaign's job documents through `job_documents` (the shared contract).

The migrate documents of every wave are built once, when the campaign starts,
and stored with it: the document hash is part of each job id, so later
reconciles must see exactly the same text. A wave's document is built for its own
region (`region`, and that region's iot:Data-ATS host). A catalog file named in the campaign
(`catalog:`) is used explicitly and reported loudly; otherwise the packaged
Amazon Trust Services catalog is used.

A wave whose devices run AWS IoT Device Client (`device_runtime: device-client`)
gets its documents, migrate and restore, wrapped in a `runHandler` document
(`orchestrator.device_client_docs`); the wrapped text is what the job carries,
its hash names the job and its size is checked against AWS's limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from job_documents import (
    BuiltDocument,
    Catalog,
    Endpoint,
    JobDocumentError,
    Operation,
    PrivateKey,
    Signer,
    SigningKeyError,
    build_document,
    check_ats_endpoint,
    load_catalog,
)
from orchestrator.device_client_docs import WrappedTooLargeError, wrap_for_device_client
from orchestrator.errors import SpecError, SpecProblem
from orchestrator.model import CampaignSpec, WaveSpec

__all__ = ["WaveDocuments", "build_restore_document", "build_wave_documents", "campaign_catalog"]


@dataclass(frozen=True, slots=True)
class WaveDocuments:
    """The migrate documents of a campaign, the endpoints and catalog they were built from.

    `documents` are what each wave's job carries; `embedded` holds, for the waves of
    Device Client devices, the ca-migration/1 document their runHandler document wraps.
    """

    endpoint: str  # the campaign region's host
    catalog: Catalog
    documents: dict[str, BuiltDocument]
    embedded: dict[str, BuiltDocument] = field(default_factory=dict)
    #: Every region's iot:Data-ATS host the documents name.
    endpoints: dict[str, str] = field(default_factory=dict)


def _for_runtime(spec: CampaignSpec, wave: WaveSpec, built: BuiltDocument) -> BuiltDocument:
    """`built` as the wave's devices take it: itself, or wrapped for Device Client."""
    settings = spec.device_client_for(wave)
    if settings is None:
        return built
    try:
        return wrap_for_device_client(built, settings)
    except WrappedTooLargeError as exc:
        where = f"waves.{wave.name}" if wave.device_client is not None else "device_client"
        raise SpecError(spec.name, (SpecProblem(where, str(exc)),)) from exc


def campaign_catalog(spec: CampaignSpec) -> Catalog:
    """The catalog the campaign names, else the packaged default one."""
    try:
        return load_catalog(Path(spec.catalog) if spec.catalog else None)
    except JobDocumentError as exc:
        raise SpecError(spec.name, (SpecProblem("catalog", str(exc)),)) from exc


def _key_id(spec: CampaignSpec, signer: PrivateKey | Signer | None) -> str | None:
    if (spec.signing is None) != (signer is None):
        raise SpecError(
            spec.name,
            (
                SpecProblem(
                    "signing",
                    "the campaign's signing and the signer given do not match (internal error)",
                ),
            ),
        )
    return spec.signing.key_id if spec.signing is not None else None


def build_wave_documents(
    spec: CampaignSpec,
    endpoint_host: str | Mapping[str, str],
    signer: PrivateKey | Signer | None = None,
) -> WaveDocuments:
    """One migrate document per wave; `SpecError` if an endpoint or a root is refused.

    `endpoint_host` is the iot:Data-ATS host of each region the waves run in (a single
    host serves a campaign of one region). `signer` (required exactly when the campaign
    has `signing`) signs every document.
    """
    key_id = _key_id(spec, signer)
    hosts = (
        dict.fromkeys(spec.regions, endpoint_host)
        if isinstance(endpoint_host, str)
        else dict(endpoint_host)
    )
    for region in spec.regions:
        host = hosts.get(region)
        if host is None:
            raise SpecError(
                spec.name,
                (SpecProblem("endpoint", f"no iot:Data-ATS endpoint resolved for {region}"),),
            )
        try:
            check_ats_endpoint(host, region)
        except JobDocumentError as exc:
            raise SpecError(spec.name, (SpecProblem("endpoint", str(exc)),)) from exc
    catalog = campaign_catalog(spec)
    documents: dict[str, BuiltDocument] = {}
    embedded: dict[str, BuiltDocument] = {}
    for wave in spec.waves:
        region = spec.region_of(wave)
        try:
            roots = [catalog.get(name) for name in spec.trust.add]
            built = build_document(
                operation=Operation.MIGRATE,
                region=region,
                campaign=spec.name,
                wave=wave.name,
                endpoint=Endpoint(host=hosts[region], port=spec.endpoint_port),
                roots=roots,
                keep_existing=spec.trust.keep_existing,
                catalog=catalog,
                sign_key=signer,
                key_id=key_id,
            )
        except SigningKeyError as exc:
            raise SpecError(spec.name, (SpecProblem("signing", str(exc)),)) from exc
        except JobDocumentError as exc:
            raise SpecError(spec.name, (SpecProblem("trust.add", str(exc)),)) from exc
        documents[wave.name] = _for_runtime(spec, wave, built)
        if documents[wave.name] is not built:
            embedded[wave.name] = built
    main_host = hosts.get(spec.region) or hosts[spec.regions[0]]
    return WaveDocuments(
        endpoint=main_host,
        catalog=catalog,
        documents=documents,
        embedded=embedded,
        endpoints={r: hosts[r] for r in spec.regions},
    )


def build_restore_document(
    spec: CampaignSpec, wave: str, signer: PrivateKey | Signer | None = None
) -> BuiltDocument:
    """The document that sends a wave's devices back to the configuration they backed up.

    Signed like the migrate documents: devices that pin a key refuse an unsigned restore.
    Wrapped in a runHandler document for a wave of Device Client devices.
    """
    built = build_document(
        operation=Operation.RESTORE,
        region=spec.region_of(wave),
        campaign=spec.name,
        wave=wave,
        sign_key=signer,
        key_id=_key_id(spec, signer),
    )
    return _for_runtime(spec, spec.wave(wave), built)
