"""Shared fixtures: generated test roots, a sandbox-style catalog, valid documents to mutate."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from job_documents import Catalog, Endpoint, build_document, load_catalog
from job_documents.testing import IssuedCert, make_root_ca, write_catalog

HOST = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
REGION = "us-east-1"


@pytest.fixture(scope="session")
def root_a() -> IssuedCert:
    return make_root_ca("ca-migrate Test Root A")


@pytest.fixture(scope="session")
def root_b() -> IssuedCert:
    return make_root_ca("ca-migrate Test Root B", key_kind="ed25519")


@pytest.fixture(scope="session")
def stranger() -> IssuedCert:
    """A perfectly good root that no catalog pins."""
    return make_root_ca("ca-migrate Stranger Root")


@pytest.fixture(scope="session")
def test_catalog_path(tmp_path_factory: pytest.TempPathFactory, root_a, root_b) -> Path:
    return write_catalog(
        tmp_path_factory.mktemp("catalog"), {"test-root-a": root_a, "test-root-b": root_b}
    )


@pytest.fixture(scope="session")
def test_catalog(test_catalog_path: Path) -> Catalog:
    return load_catalog(test_catalog_path)


@pytest.fixture(scope="session")
def ats_migrate_text() -> str:
    """A migrate document with all five Amazon Trust Services roots."""
    return build_document(
        operation="migrate",
        region=REGION,
        campaign="ats-2026",
        wave="canary",
        endpoint=Endpoint(HOST),
        roots=load_catalog().roots,
    ).text


@pytest.fixture
def ats_migrate(ats_migrate_text: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(ats_migrate_text)
    return parsed


@pytest.fixture(scope="session")
def built_test_migrate(test_catalog: Catalog) -> dict[str, Any]:
    return build_document(
        operation="migrate",
        region=REGION,
        campaign="c1",
        wave="w1",
        endpoint=Endpoint(HOST),
        roots=[test_catalog.get("test-root-a")],
        catalog=test_catalog,
    ).document


@pytest.fixture
def test_migrate(built_test_migrate: dict[str, Any]) -> dict[str, Any]:
    """A valid migrate document under the test catalog, fresh for each test to mutate."""
    return copy.deepcopy(built_test_migrate)
