"""Hypothesis fuzzes the job document the agent receives: always REJECTED, never a write.

The device pins a signing key, so no generated or mutated document can be
valid; every one must take the validate -> REJECTED path with a reason, raise
nothing, and leave every file of the device untouched. 10,000 examples in all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_handler.agent import Agent, AgentSettings
from device_handler.channel import JobExecution
from device_handler.memory import MemoryConnector
from device_handler.validation import ValidationSettings, make_validator
from job_documents import Endpoint, Operation, build_document, load_catalog
from job_documents.testing import make_signing_key, public_key_pem, write_catalog

from .conftest import ATS_HOST, THING, Device, World

FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class Fuzzed:
    def __init__(self, device: Device, world: World, tmp: Path) -> None:
        catalog = write_catalog(tmp / "catalog", {"amazon-root-ca-1": world.ats_root.pem.decode()})
        key = make_signing_key()
        (tmp / "ops.pub").write_text(public_key_pem(make_signing_key()))  # not the signer's
        validate = make_validator(
            ValidationSettings(region="us-east-1", catalog=catalog, verify_key=tmp / "ops.pub")
        )
        built = build_document(
            operation=Operation.MIGRATE,
            region="us-east-1",
            campaign="ats-2026",
            wave="canary",
            endpoint=Endpoint(host=ATS_HOST),
            roots=[load_catalog(catalog).get("amazon-root-ca-1")],
            catalog=load_catalog(catalog),
            sign_key=key,
        )
        self.valid: dict[str, Any] = built.document
        self.device = device
        self.agent = Agent(
            AgentSettings(thing_name=THING, paths=device.paths),
            validate,
            MemoryConnector(device.jobs, THING),
        )
        self.snapshot = self.files()
        self.count = 0

    def files(self) -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in self.device.root.rglob("*") if p.is_file()}

    def check(self, document: str | bytes | dict[str, Any]) -> None:
        self.count += 1
        job_id = f"job-{self.count}"
        text = document if isinstance(document, str | bytes) else json.dumps(document)
        self.device.jobs.add_job(THING, job_id, text if isinstance(text, str) else "x")
        execution = JobExecution(
            job_id=job_id, status="QUEUED", document=document, version_number=1
        )
        outcome = self.agent.handle(execution)
        assert outcome.status == "REJECTED", outcome
        details = self.device.jobs.execution(THING, job_id).status_details
        assert details["reason"]
        assert details["message"]
        assert len(details) <= 10
        assert all(1 <= len(v) <= 1024 for v in details.values())


@pytest.fixture(scope="module")
def fuzzed(world: World, tmp_path_factory: pytest.TempPathFactory) -> Fuzzed:
    from .conftest import make_device

    root = tmp_path_factory.mktemp("fuzz")
    return Fuzzed(make_device(world, root / "device"), world, root)


@pytest.fixture(autouse=True, scope="module")
def _nothing_written(fuzzed: Fuzzed):
    yield
    assert fuzzed.files() == fuzzed.snapshot


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=5,
)
keys = st.sampled_from(
    ["schema", "operation", "campaign", "wave", "region", "endpoint", "trust", "probe", "signature"]
)


@settings(FUZZ, max_examples=3500)
@given(st.binary(max_size=300))
def test_random_bytes_are_rejected(fuzzed: Fuzzed, data: bytes):
    fuzzed.check(data)


@settings(FUZZ, max_examples=2000)
@given(st.dictionaries(keys, json_values, max_size=9))
def test_documents_with_the_right_keys_and_random_values_are_rejected(
    fuzzed: Fuzzed, document: dict[str, Any]
):
    fuzzed.check(document)


@settings(FUZZ, max_examples=2000)
@given(st.data())
def test_mutations_of_a_valid_signed_document_are_rejected(fuzzed: Fuzzed, data: st.DataObject):
    document = json.loads(json.dumps(fuzzed.valid))
    target = document
    depth = data.draw(st.integers(min_value=0, max_value=2))
    for _ in range(depth):
        children = [k for k, v in target.items() if isinstance(v, dict)]
        if not children:
            break
        target = target[data.draw(st.sampled_from(sorted(children)))]
    key = data.draw(st.sampled_from(sorted(target)) | st.text(max_size=8))
    if data.draw(st.booleans()) and key in target:
        del target[key]
    else:
        target[key] = data.draw(json_values)
    fuzzed.check(document)


@settings(FUZZ, max_examples=2500)
@given(st.text(max_size=300))
def test_random_text_is_rejected(fuzzed: Fuzzed, text: str):
    fuzzed.check(text)
