"""Every operation of the contract is carried through each package, one place per package.

`job_documents.Operation` is the one vocabulary. For each of its members: the builder
builds a document and the schema has a branch for it, the device's validator hands it
back as that `Operation`, the device has a target for it, and the planner has a job-id
tag for it. A member added to the enum without the rest fails here (and in mypy, for
the exhaustive matches).
"""

from __future__ import annotations

from typing import Any

import pytest

from device_handler.order import Order
from device_handler.snapshot import Snapshot
from device_handler.targets import (
    migrate_target,
    prune_target,
    replaces_backup,
    restore_target,
    target_for,
)
from device_handler.trust import BundleRoot, EndpointConfig, TrustBundle
from device_handler.validation import ValidationSettings, make_validator
from job_documents import (
    Endpoint,
    Operation,
    RootRef,
    build_document,
    load_catalog,
    load_schema,
)
from job_documents._models import DOCUMENT_ADAPTER
from job_documents._schema import operation_validators
from orchestrator.planner import job_id_for, operation_tag

REGION = "us-east-1"
LEGACY = EndpointConfig("a1sandbox2demo.iot.us-east-1.amazonaws.com", 8883)
ATS = EndpointConfig("a1sandbox2demo-ats.iot.us-east-1.amazonaws.com", 8883)


def _roots() -> list[BundleRoot]:
    return [BundleRoot(sha256=r.sha256, pem=r.pem) for r in load_catalog().roots]


def _arguments(operation: Operation) -> dict[str, Any]:
    catalog = load_catalog()
    match operation:
        case Operation.MIGRATE:
            return {"endpoint": Endpoint(ATS.host), "roots": catalog.roots[:1]}
        case Operation.RESTORE:
            return {}
        case Operation.PRUNE:
            first = catalog.roots[0]
            return {"remove": [RootRef(name=first.name, sha256=first.sha256)]}
    raise AssertionError(f"no test arguments for {operation}")  # a new operation lands here


def _live() -> Snapshot:
    """A device on the legacy endpoint trusting two catalog roots."""
    return Snapshot.of(LEGACY, TrustBundle().extended(_roots()[:2]).render())


def _order(operation: Operation) -> Order:
    roots = _roots()
    return Order(
        operation=operation,
        campaign="c",
        wave="w",
        region=REGION,
        sha256="0" * 64,
        endpoint=ATS if operation is Operation.MIGRATE else None,
        roots=(roots[2],) if operation is Operation.MIGRATE else (),
        remove=frozenset({roots[0].sha256}) if operation is Operation.PRUNE else frozenset(),
    )


@pytest.mark.parametrize("operation", list(Operation))
def test_every_operation_has_a_builder_a_schema_branch_and_a_device_order(
    operation: Operation,
) -> None:
    built = build_document(
        operation=operation, region=REGION, campaign="c", wave="w", **_arguments(operation)
    )
    assert built.document["operation"] == operation.value
    assert operation.value in load_schema()["discriminator"]["mapping"]
    assert not list(operation_validators()[operation.value].iter_errors(built.document))
    assert DOCUMENT_ADAPTER.validate_python(built.document).operation == operation.value
    order = make_validator(ValidationSettings(region=REGION))(built.text)
    assert order.operation is operation


@pytest.mark.parametrize("operation", list(Operation))
def test_every_operation_has_a_device_target_that_changes_the_device(
    operation: Operation,
) -> None:
    live = _live()
    previous = Snapshot.of(ATS, TrustBundle().extended(_roots()[:1]).render()).render()
    target = target_for(
        _order(operation), live, device_client_config=None, read_previous=lambda: previous
    )
    assert target is not None
    assert target != live
    assert isinstance(replaces_backup(operation), bool)


def test_each_operation_reaches_its_own_target_function() -> None:
    live = _live()
    previous = Snapshot.of(ATS, TrustBundle().extended(_roots()[:1]).render())
    reads: list[str] = []

    def read_previous() -> bytes:
        reads.append("previous")
        return previous.render()

    def target(operation: Operation) -> Snapshot | None:
        return target_for(
            _order(operation), live, device_client_config=None, read_previous=read_previous
        )

    assert target(Operation.MIGRATE) == migrate_target(_order(Operation.MIGRATE), live)
    assert target(Operation.PRUNE) == prune_target(_order(Operation.PRUNE), live)
    assert reads == []  # only restore reads the backup
    assert target(Operation.RESTORE) == restore_target(live, previous.render())
    assert reads == ["previous"]


def test_an_operation_the_device_does_not_know_is_never_treated_as_another() -> None:
    order = Order(operation="rotate", campaign="c", wave="w", region=REGION, sha256="0" * 64)  # type: ignore[arg-type]
    with pytest.raises(AssertionError):
        target_for(order, _live(), device_client_config=None, read_previous=lambda: None)
    with pytest.raises(AssertionError):
        replaces_backup("rotate")  # type: ignore[arg-type]


def test_only_migrate_replaces_the_backup_restore_goes_back_to() -> None:
    assert {op for op in Operation if replaces_backup(op)} == {Operation.MIGRATE}


def test_every_operation_has_its_own_planner_tag_so_job_ids_never_collide() -> None:
    tags = {operation: operation_tag(operation) for operation in Operation}
    assert len(set(tags.values())) == len(Operation)
    ids = {job_id_for("c", "w", "a" * 64, operation) for operation in Operation}
    assert len(ids) == len(Operation)
