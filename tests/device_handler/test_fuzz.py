"""Hypothesis fuzzes the job document the agent receives: rejected for the right reason, no write.

Two devices, one pinning the operators' signing key and one without a key:

- Random bytes, text and documents with the contract's keys: REJECTED on either device.
- A genuine signed document (signed by the key the device pins) is accepted as it is; every
  mutation of its signed content is REJECTED, and a mutation that leaves the content valid
  (another wave, port, probe setting...) is REJECTED `signature-invalid`: only the
  signature can catch it.
- Mutations of an unsigned document against the device without a key: a mutation that breaks
  one content rule is REJECTED with that rule's own code; an arbitrary mutation is REJECTED
  with the library validator's first code, or accepted only if the library finds it valid.

Every REJECTED leaves every file of both devices untouched (checked once at module end).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from device_handler.agent import Agent, AgentSettings
from device_handler.channel import JobExecution
from device_handler.memory import MemoryConnector
from device_handler.validation import ValidationSettings, make_validator
from job_documents import (
    DocumentInvalid,
    Endpoint,
    Operation,
    ValidationPolicy,
    build_document,
    canonical_json,
    load_catalog,
    load_verify_key,
    validate_document,
)
from job_documents.testing import make_signing_key, private_key_pem, public_key_pem, write_catalog

from .conftest import ATS_HOST, THING, Device, World, fingerprint, make_device

FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
REGION = "us-east-1"


@dataclass
class Side:
    """One device, its agent, and the library policy equal to its validation settings."""

    device: Device
    agent: Agent
    policy: ValidationPolicy
    count: int = 0

    def handle(self, document: str | bytes | dict[str, Any]) -> tuple[str, dict[str, str]]:
        self.count += 1
        job_id = f"job-{self.count}"
        text = document if isinstance(document, str | bytes) else json.dumps(document)
        self.device.jobs.add_job(THING, job_id, text if isinstance(text, str) else "x")
        execution = JobExecution(
            job_id=job_id, status="QUEUED", document=document, version_number=1
        )
        outcome = self.agent.handle(execution)
        details = self.device.jobs.execution(THING, job_id).status_details
        return outcome.status, details

    def rejected(self, document: str | bytes | dict[str, Any]) -> str:
        """Hand `document` to the agent; it must be REJECTED with well-formed details."""
        status, details = self.handle(document)
        assert status == "REJECTED", (status, details)
        assert details["reason"]
        assert details["message"]
        assert len(details) <= 10
        assert all(1 <= len(v) <= 1024 for v in details.values())
        return details["reason"]

    def library_codes(self, document: dict[str, Any]) -> list[str] | None:
        """The library validator's problem codes for `document`, or None when it is valid."""
        try:
            validate_document(document, self.policy)
        except DocumentInvalid as exc:
            return [p.code for p in exc.problems]
        return None


class Fuzzed:
    def __init__(self, world: World, tmp: Path) -> None:
        self.world = world
        self.catalog_path = write_catalog(
            tmp / "catalog", {"amazon-root-ca-1": world.ats_root.pem.decode()}
        )
        self.catalog = load_catalog(self.catalog_path)
        key = make_signing_key()
        (tmp / "ops.pub").write_text(public_key_pem(key))  # the signer's own public key
        signed_settings = ValidationSettings(
            region=REGION, catalog=self.catalog_path, verify_key=tmp / "ops.pub"
        )
        unsigned_settings = ValidationSettings(region=REGION, catalog=self.catalog_path)
        self.unsigned_validate = make_validator(unsigned_settings)
        self.signed = self._side(
            world, tmp / "signed", signed_settings, load_verify_key(tmp / "ops.pub")
        )
        self.unsigned = self._side(world, tmp / "unsigned", unsigned_settings, None)
        self.signed_base = self._build(sign_key=key)
        self.unsigned_base = self._build(sign_key=None)
        self.snapshot = self.files()

    def _side(self, world: World, root: Path, settings: ValidationSettings, key: Any) -> Side:
        device = make_device(world, root)
        agent = Agent(
            AgentSettings(thing_name=THING, paths=device.paths),
            make_validator(settings),
            MemoryConnector(device.jobs, THING),
        )
        policy = ValidationPolicy(
            region=REGION, catalog=self.catalog, verify_key=key, require_signature=key is not None
        )
        return Side(device, agent, policy)

    def _build(self, sign_key: Any) -> dict[str, Any]:
        document: dict[str, Any] = build_document(
            operation=Operation.MIGRATE,
            region=REGION,
            campaign="ats-2026",
            wave="canary",
            endpoint=Endpoint(host=ATS_HOST),
            roots=[self.catalog.get("amazon-root-ca-1")],
            catalog=self.catalog,
            sign_key=sign_key,
        ).document
        return document

    def files(self) -> dict[str, bytes]:
        roots = (self.signed.device.root, self.unsigned.device.root)
        return {str(p): p.read_bytes() for r in roots for p in r.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def fuzzed(world: World, tmp_path_factory: pytest.TempPathFactory) -> Fuzzed:
    return Fuzzed(world, tmp_path_factory.mktemp("fuzz"))


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


def _mutate(
    base: dict[str, Any], data: st.DataObject, *, skip: str | None = None
) -> dict[str, Any]:
    """`base` with one member somewhere in it deleted or replaced (never the `skip` member)."""
    document = copy.deepcopy(base)
    target: Any = document
    depth = data.draw(st.integers(min_value=0, max_value=3))
    for _ in range(depth):
        if isinstance(target, dict):
            children = [k for k, v in target.items() if isinstance(v, dict | list) and k != skip]
            if not children:
                break
            target = target[data.draw(st.sampled_from(sorted(children)))]
        elif isinstance(target, list) and target:
            target = target[data.draw(st.integers(0, len(target) - 1))]
        else:
            break
    if isinstance(target, list):
        if target and data.draw(st.booleans()):
            del target[data.draw(st.integers(0, len(target) - 1))]
        else:
            target.append(data.draw(json_values))
        return document
    choices = [k for k in sorted(target) if target is not document or k != skip]
    key = data.draw((st.sampled_from(choices) if choices else st.nothing()) | st.text(max_size=8))
    assume(target is not document or key != skip)
    if data.draw(st.booleans()) and key in target:
        del target[key]
    else:
        target[key] = data.draw(json_values)
    return document


def _changed(document: dict[str, Any], base: dict[str, Any], *, skip: str) -> bool:
    def content(d: dict[str, Any]) -> str:
        return canonical_json({k: v for k, v in d.items() if k != skip}).decode()

    try:
        return content(document) != content(base)
    except (TypeError, ValueError):  # not canonicalisable: certainly not the signed payload
        return True


# -- any device: garbage in, REJECTED out ---------------------------------------------------


@settings(FUZZ, max_examples=2000)
@given(st.binary(max_size=300))
def test_random_bytes_are_rejected(fuzzed: Fuzzed, data: bytes):
    fuzzed.signed.rejected(data)


@settings(FUZZ, max_examples=1500)
@given(st.text(max_size=300))
def test_random_text_is_rejected(fuzzed: Fuzzed, text: str):
    fuzzed.unsigned.rejected(text)


@settings(FUZZ, max_examples=1500)
@given(st.dictionaries(keys, json_values, max_size=9), st.booleans())
def test_documents_with_the_right_keys_and_random_values_are_rejected(
    fuzzed: Fuzzed, document: dict[str, Any], signed: bool
):
    (fuzzed.signed if signed else fuzzed.unsigned).rejected(document)


# -- the device that pins a key: tampering is detected ---------------------------------------


def test_the_genuine_signed_document_is_accepted(fuzzed: Fuzzed):
    assert fuzzed.signed.library_codes(fuzzed.signed_base) is None
    order = fuzzed.signed.agent._validate(fuzzed.signed_base)
    assert order.wave == "canary"
    assert order.endpoint is not None
    assert order.endpoint.host == ATS_HOST
    unsigned = copy.deepcopy(fuzzed.signed_base)
    del unsigned["signature"]
    assert fuzzed.signed.rejected(unsigned) == "signature-missing"


Edit = Callable[[dict[str, Any], st.DataObject], None]


def _set(path: tuple[str, ...], values: st.SearchStrategy[Any]) -> Edit:
    def edit(document: dict[str, Any], data: st.DataObject) -> None:
        target = document
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = data.draw(values)

    return edit


def _port_443(document: dict[str, Any], data: st.DataObject) -> None:
    document["endpoint"] = {"host": ATS_HOST, "port": 443, "alpn": ["x-amzn-mqtt-ca"]}


names = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
# edits after which the document is still valid content: only the signature can tell
VALID_EDITS: dict[str, Edit] = {
    "campaign": _set(("campaign",), names),
    "wave": _set(("wave",), names),
    "keepExisting": _set(("trust", "keepExisting"), st.just(value=False)),
    "probe.timeoutSeconds": _set(("probe", "timeoutSeconds"), st.integers(1, 9) | st.just(11)),
    "probe.attempts": _set(("probe", "attempts"), st.integers(1, 2)),
    "port": _port_443,
    "host": _set(
        ("endpoint", "host"),
        st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True)
        .map(lambda p: f"{p}-ats.iot.{REGION}.amazonaws.com")
        .filter(lambda h: h != ATS_HOST),
    ),
}


@settings(FUZZ, max_examples=300)
@given(st.data())
def test_a_signed_document_edited_to_other_valid_content_is_rejected_signature_invalid(
    fuzzed: Fuzzed, data: st.DataObject
):
    chosen = data.draw(st.sets(st.sampled_from(sorted(VALID_EDITS)), min_size=1))
    document = copy.deepcopy(fuzzed.signed_base)
    for name in sorted(chosen):
        VALID_EDITS[name](document, data)
    assume(_changed(document, fuzzed.signed_base, skip="signature"))
    assert fuzzed.unsigned.library_codes(document) is None  # still valid content
    assert fuzzed.signed.rejected(document) == "signature-invalid"


@settings(FUZZ, max_examples=1500)
@given(st.data())
def test_every_mutation_of_signed_content_is_rejected_and_fails_the_signature(
    fuzzed: Fuzzed, data: st.DataObject
):
    document = _mutate(fuzzed.signed_base, data, skip="signature")
    assume(_changed(document, fuzzed.signed_base, skip="signature"))
    codes = fuzzed.signed.library_codes(document)
    assert codes is not None
    assert "signature-invalid" in codes
    assert fuzzed.signed.rejected(document) == codes[0]


# -- the device without a key: the content checks stand alone -------------------------------

Break = Callable[[Fuzzed, dict[str, Any]], None]


def _host(value: str) -> Break:
    def edit(fz: Fuzzed, document: dict[str, Any]) -> None:
        document["endpoint"]["host"] = value

    return edit


def _root(make: Callable[[Fuzzed, dict[str, Any]], dict[str, Any]]) -> Break:
    def edit(fz: Fuzzed, document: dict[str, Any]) -> None:
        document["trust"]["roots"][0] = make(fz, document["trust"]["roots"][0])

    return edit


def _region(fz: Fuzzed, document: dict[str, Any]) -> None:
    document["region"] = "eu-west-1"


def _duplicate_root(fz: Fuzzed, document: dict[str, Any]) -> None:
    document["trust"]["roots"].append(copy.deepcopy(document["trust"]["roots"][0]))


def _too_large(fz: Fuzzed, document: dict[str, Any]) -> None:
    document["wave"] = "w" * 33_000


SUFFIX = f".iot.{REGION}.amazonaws.com"
LONG_HOST = "a." * 110 + "ab-ats" + SUFFIX
BAD_PEM = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
# one broken content rule each, and the code that rule must report
CONTENT_RULES: dict[str, tuple[str, Break]] = {
    "legacy host": ("endpoint-legacy", _host("a1sandbox2demo" + SUFFIX)),
    "uppercase host": ("endpoint-case", _host(ATS_HOST.upper())),
    "host of another region": (
        "endpoint-region",
        _host("a1sandbox2demo-ats.iot.eu-west-1.amazonaws.com"),
    ),
    "IP address": ("endpoint-ip", _host("10.0.0.1")),
    "host with a scheme": ("endpoint-scheme", _host("mqtts://" + ATS_HOST)),
    "host with a port": ("endpoint-port", _host(ATS_HOST + ":8883")),
    "host with a trailing dot": ("endpoint-trailing-dot", _host(ATS_HOST + ".")),
    "host of 254 characters": ("endpoint-host", _host(LONG_HOST)),
    "extra labels": ("endpoint-labels", _host("x.a1sandbox2demo-ats" + SUFFIX)),
    "another region": ("region-mismatch", _region),
    "root outside the catalog": (
        "unknown-root",
        _root(
            lambda fz, _r: {
                "name": "unrelated-root",
                "sha256": fingerprint(fz.world.other_root),
                "pem": fz.world.other_root.pem.decode(),
            }
        ),
    ),
    "stated sha256 not the PEM's": (
        "fingerprint-mismatch",
        _root(lambda fz, r: {**r, "sha256": fingerprint(fz.world.other_root)}),
    ),
    "root under another catalog name": (
        "root-name-mismatch",
        _root(lambda _fz, r: {**r, "name": "amazon-root-ca-3"}),
    ),
    "the same root twice": ("duplicate-root", _duplicate_root),
    "a leaf certificate as root": (
        "pem-not-ca",
        _root(
            lambda fz, _r: {
                "name": "device-leaf",
                "sha256": fingerprint(fz.world.device),
                "pem": fz.world.device.pem.decode(),
            }
        ),
    ),
    "PEM that is not a certificate": ("pem-invalid", _root(lambda _fz, r: {**r, "pem": BAD_PEM})),
    "private key in the document": (
        "private-key",
        _root(lambda _fz, r: {**r, "pem": private_key_pem(make_signing_key())}),
    ),
    "over 32,768 characters": ("too-large", _too_large),
}


def test_the_long_host_has_254_characters():
    assert len(LONG_HOST) == 254


@pytest.mark.parametrize("rule", sorted(CONTENT_RULES))
def test_an_unsigned_document_breaking_one_content_rule_is_rejected_with_its_code(
    fuzzed: Fuzzed, rule: str
):
    code, edit = CONTENT_RULES[rule]
    assert fuzzed.unsigned.library_codes(fuzzed.unsigned_base) is None
    document = copy.deepcopy(fuzzed.unsigned_base)
    edit(fuzzed, document)
    assert fuzzed.unsigned.rejected(document) == code


@settings(FUZZ, max_examples=1500)
@given(st.data())
def test_a_mutated_unsigned_document_is_rejected_with_the_library_code_or_valid(
    fuzzed: Fuzzed, data: st.DataObject
):
    document = _mutate(fuzzed.unsigned_base, data)
    assume(_changed(document, fuzzed.unsigned_base, skip=""))
    codes = fuzzed.unsigned.library_codes(document)
    if codes is None:  # still valid: the device accepts it too (not run: it would migrate)
        order = fuzzed.unsigned_validate(document)
        assert order.sha256 == validate_document(document, fuzzed.unsigned.policy).sha256
        return
    assert fuzzed.unsigned.rejected(document) == codes[0]
