"""The catalog of known root CAs: names, pinned SHA-256 fingerprints, PEMs.

The packaged default holds the five Amazon Trust Services roots. A catalog
file of the same format is how the sandbox (or a private PKI) publishes other
roots; operators and devices are pointed at it explicitly, never silently.

Format (`catalog.json`, "file" relative to the catalog file's directory):

    {"catalog": "ca-migrate-catalog/1", "description": "...", "sandbox": false,
     "roots": [{"name": "amazon-root-ca-1", "file": "amazon-root-ca-1.pem",
                "sha256": "<64 lowercase hex>"}]}

Invariants checked on load: every file holds exactly one self-signed CA
certificate whose SHA-256 equals its pin; names and fingerprints are unique.
Validity dates are not checked here (they depend on the clock): the builder
and the validator check them at use.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from job_documents._pem import inspect_root_pem, normalize_fingerprint
from job_documents.errors import CatalogError, CertificateRejected, UnknownRoot

__all__ = ["CATALOG_FORMAT", "Catalog", "CatalogRoot", "default_catalog_path", "load_catalog"]

CATALOG_FORMAT = "ca-migrate-catalog/1"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class CatalogRoot:
    """A known root CA: `sha256` is the pinned SHA-256 of its DER (lowercase hex)."""

    name: str
    sha256: str
    pem: str
    subject: str
    key_type: str
    not_after: datetime


@dataclass(frozen=True, slots=True)
class Catalog:
    """Known roots, where they came from, and whether this is the packaged default."""

    roots: tuple[CatalogRoot, ...]
    source: str
    is_default: bool
    description: str = ""
    sandbox: bool = False

    def get(self, name_or_sha256: str) -> CatalogRoot:
        """The root with this name or SHA-256 (colons and uppercase tolerated)."""
        fingerprint = normalize_fingerprint(name_or_sha256)
        for root in self.roots:
            if root.name == name_or_sha256 or (
                fingerprint is not None and root.sha256 == fingerprint
            ):
                return root
        known = ", ".join(root.name for root in self.roots)
        raise UnknownRoot(
            f"{name_or_sha256!r} is not in the catalog {self.source} (known roots: {known}); "
            "pass a PEM file with --allow-unknown-ca, or use --catalog for another catalog"
        )

    def by_sha256(self, sha256: str) -> CatalogRoot | None:
        """The root with this fingerprint, or None."""
        for root in self.roots:
            if root.sha256 == sha256:
                return root
        return None

    def fingerprints(self) -> frozenset[str]:
        """The pinned fingerprints of every root."""
        return frozenset(root.sha256 for root in self.roots)

    def names(self) -> tuple[str, ...]:
        """Root names, in catalog order."""
        return tuple(root.name for root in self.roots)


def default_catalog_path() -> Path:
    """The packaged catalog file (the five Amazon Trust Services roots)."""
    return Path(str(resources.files("job_documents").joinpath("data", "roots", "catalog.json")))


def load_catalog(path: Path | None = None) -> Catalog:
    """The catalog at `path` (a catalog.json file, or a directory holding one).

    None loads the packaged default (cached: it cannot change while running).
    Raises CatalogError with a message naming the file and the problem.
    """
    if path is None:
        return _default_catalog()
    path = Path(path)
    if path.is_dir():
        path /= "catalog.json"
    return _load(path, is_default=False)


@cache
def _default_catalog() -> Catalog:
    return _load(default_catalog_path(), is_default=True)


def _load(path: Path, *, is_default: bool) -> Catalog:
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc.strerror}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise CatalogError(f"catalog {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("catalog") != CATALOG_FORMAT:
        raise CatalogError(
            f"{path} is not a root catalog: its top-level object needs "
            f'"catalog": "{CATALOG_FORMAT}"'
        )
    entries = raw.get("roots")
    if not isinstance(entries, list) or not entries:
        raise CatalogError(f'catalog {path} has no "roots" list (it needs at least one root)')
    description = raw.get("description", "")
    sandbox = raw.get("sandbox", False)
    if not isinstance(description, str) or not isinstance(sandbox, bool):
        raise CatalogError(f'catalog {path}: "description" must be a string, "sandbox" a boolean')
    roots: list[CatalogRoot] = []
    for index, entry in enumerate(entries):
        roots.append(_load_root(path, index, entry))
    for attribute in ("name", "sha256"):
        seen: set[str] = set()
        for root in roots:
            value = getattr(root, attribute)
            if value in seen:
                raise CatalogError(f"catalog {path} lists {attribute} {value!r} twice")
            seen.add(value)
    return Catalog(
        roots=tuple(roots),
        source=str(path),
        is_default=is_default,
        description=description,
        sandbox=sandbox,
    )


def _load_root(path: Path, index: int, entry: Any) -> CatalogRoot:
    where = f"catalog {path}, roots[{index}]"
    if not isinstance(entry, dict) or set(entry) != {"name", "file", "sha256"}:
        raise CatalogError(f'{where}: each root needs exactly "name", "file" and "sha256"')
    name, file, pin = entry["name"], entry["file"], entry["sha256"]
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise CatalogError(
            f"{where}: name {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if not isinstance(pin, str) or normalize_fingerprint(pin) != pin:
        raise CatalogError(f"{where} ({name}): sha256 must be 64 lowercase hex digits, no colons")
    if not isinstance(file, str) or Path(file).is_absolute() or ".." in Path(file).parts:
        raise CatalogError(f"{where} ({name}): file must be a path relative to the catalog")
    pem_path = path.parent / file
    try:
        pem = pem_path.read_text(encoding="ascii")
    except OSError as exc:
        raise CatalogError(f"{where} ({name}): cannot read {pem_path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{where} ({name}): {pem_path} is not a PEM text file") from exc
    try:
        info = inspect_root_pem(pem, strict=False)
    except CertificateRejected as exc:
        raise CatalogError(f"{where} ({name}): {pem_path}: {exc}") from exc
    if info.sha256 != pin:
        raise CatalogError(
            f"{where} ({name}): {pem_path} has SHA-256 {info.sha256}, but the catalog pins "
            f"{pin}: the file was replaced or the pin is wrong; do not use this catalog"
        )
    return CatalogRoot(
        name=name,
        sha256=pin,
        pem=info.canonical_pem(),
        subject=info.subject,
        key_type=info.key_type,
        not_after=info.not_after,
    )
