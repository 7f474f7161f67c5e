"""The device's validator over job_documents, and the agent driven by real documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device_handler.agent import Agent, AgentSettings
from device_handler.errors import ConfigError, DocumentRejected
from device_handler.memory import MemoryConnector
from device_handler.validation import ValidationSettings, make_validator
from job_documents import Endpoint, Operation, RootInput, RootRef, build_document, load_catalog
from job_documents.testing import make_signing_key, public_key_pem, write_catalog

from .conftest import ATS_HOST, THING, Device, World, fingerprint


@pytest.fixture(scope="module")
def catalog(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catalog(
        tmp_path_factory.mktemp("catalog"), {"amazon-root-ca-1": world.ats_root.pem.decode()}
    )


def _migrate(catalog: Path, **kwargs: object) -> str:
    root = load_catalog(catalog).get("amazon-root-ca-1")
    built = build_document(
        operation=Operation.MIGRATE,
        region="us-east-1",
        campaign="ats-2026",
        wave="canary",
        endpoint=Endpoint(host=ATS_HOST, port=8883),
        roots=[root],
        catalog=load_catalog(catalog),
        **kwargs,  # type: ignore[arg-type]
    )
    return built.text


def test_a_built_migrate_document_becomes_an_order(catalog: Path, world: World):
    validate = make_validator(ValidationSettings(region="us-east-1", catalog=catalog))
    order = validate(_migrate(catalog))
    assert order.operation == "migrate"
    assert order.endpoint is not None
    assert order.endpoint.host == ATS_HOST
    assert [r.sha256 for r in order.roots] == [fingerprint(world.ats_root)]
    assert order.keep_existing is True


def test_a_root_outside_the_pinned_catalog_is_rejected(catalog: Path, world: World):
    validate = make_validator(ValidationSettings(region="us-east-1"))  # packaged catalog
    with pytest.raises(DocumentRejected) as caught:
        validate(_migrate(catalog))
    assert caught.value.code == "unknown-root"
    assert "amazon-root-ca-1" in caught.value.message


def test_another_region_is_rejected(catalog: Path):
    validate = make_validator(ValidationSettings(region="eu-west-1", catalog=catalog))
    with pytest.raises(DocumentRejected):
        validate(_migrate(catalog))


def test_unsigned_document_is_rejected_when_the_device_pins_a_key(catalog: Path, tmp_path: Path):
    key = make_signing_key()
    public = tmp_path / "ops.pub"
    public.write_text(public_key_pem(key))
    validate = make_validator(
        ValidationSettings(region="us-east-1", catalog=catalog, verify_key=public)
    )
    with pytest.raises(DocumentRejected) as caught:
        validate(_migrate(catalog))
    assert "signature" in caught.value.code
    assert validate(_migrate(catalog, sign_key=key)).operation == "migrate"


def test_a_private_key_where_the_public_key_belongs_is_a_config_error(tmp_path: Path):
    from job_documents.testing import private_key_pem

    path = tmp_path / "ops.key"
    path.write_text(private_key_pem(make_signing_key()))
    with pytest.raises(ConfigError, match="signing_public_key"):
        make_validator(ValidationSettings(verify_key=path))


def test_prune_and_restore_documents_become_orders(catalog: Path, world: World):
    validate = make_validator(ValidationSettings(region="us-east-1", catalog=catalog))
    prune = build_document(
        operation=Operation.PRUNE,
        region="us-east-1",
        campaign="ats-2026",
        wave="prune",
        remove=[RootRef(name="legacy", sha256=fingerprint(world.legacy_root))],
        catalog=load_catalog(catalog),
        allow_unknown_roots=True,
    )
    order = validate(prune.text)
    assert order.remove == frozenset({fingerprint(world.legacy_root)})
    restore = build_document(
        operation=Operation.RESTORE, region="us-east-1", campaign="ats-2026", wave="back"
    )
    assert validate(json.loads(restore.text)).operation == "restore"


def test_agent_migrates_with_a_document_built_by_job_documents(
    device: Device, catalog: Path, world: World
):
    validate = make_validator(ValidationSettings(region="us-east-1", catalog=catalog))
    connector = MemoryConnector(device.jobs, THING, vias={ATS_HOST: "ats"}, check=world.handshake)
    settings = AgentSettings(
        thing_name=THING, paths=device.paths, identity=world.identity, overrides=world.overrides
    )
    device.jobs.add_job(THING, "job-1", _migrate(catalog))
    outcome = Agent(settings, validate, connector).poll()
    assert (outcome.status, outcome.via) == ("SUCCEEDED", "ats")


def test_root_input_is_accepted_when_unknown_roots_are_allowed(catalog: Path, world: World):
    built = build_document(
        operation=Operation.MIGRATE,
        region="us-east-1",
        campaign="ats-2026",
        wave="canary",
        endpoint=Endpoint(host=ATS_HOST),
        roots=[RootInput(name="other", pem=world.other_root.pem.decode())],
        allow_unknown_roots=True,
    )
    validate = make_validator(ValidationSettings(region="us-east-1", catalog=catalog))
    with pytest.raises(DocumentRejected):
        validate(built.text)


# ----------------------------------------------------------- validity margin


def _expiring_in(days: int, tmp_path: Path) -> tuple[Path, str]:
    """A catalog with one root that expires in `days` days, and a migrate document for it."""
    from datetime import UTC, datetime, timedelta

    from job_documents.testing import make_root_ca

    now = datetime.now(UTC)
    root = make_root_ca("Short-lived Root", not_after=now + timedelta(days=days))
    catalog = write_catalog(tmp_path / "short", {"short-lived": root})
    loaded = load_catalog(catalog)
    built = build_document(
        operation=Operation.MIGRATE,
        region="us-east-1",
        campaign="ats-2026",
        wave="canary",
        endpoint=Endpoint(host=ATS_HOST, port=8883),
        roots=[loaded.get("short-lived")],
        catalog=loaded,
        validity_margin=timedelta(days=0),
    )
    return catalog, built.text


def test_by_default_the_device_refuses_a_root_that_expires_within_a_year(tmp_path: Path):
    catalog, document = _expiring_in(10, tmp_path)
    validate = make_validator(ValidationSettings(region="us-east-1", catalog=catalog))
    with pytest.raises(DocumentRejected) as caught:
        validate(document)
    assert caught.value.code == "pem-expires-soon"


def test_a_lower_margin_lets_the_device_take_a_short_lived_root(tmp_path: Path):
    catalog, document = _expiring_in(10, tmp_path)
    settings = ValidationSettings(region="us-east-1", catalog=catalog, validity_margin_days=5)
    assert make_validator(settings)(document).operation == "migrate"


def test_the_device_and_document_validate_use_the_same_default_margin():
    """`document validate` checks "as a device would": with the defaults, the same answer."""
    import inspect

    from device_handler.validation import DEFAULT_VALIDITY_MARGIN_DAYS
    from orchestrator.cli import documents

    for command in (documents.validate, documents.build):
        default = inspect.signature(command).parameters["margin_days"].default
        assert default == DEFAULT_VALIDITY_MARGIN_DAYS, command.__name__
    assert ValidationSettings().validity_margin_days == DEFAULT_VALIDITY_MARGIN_DAYS
