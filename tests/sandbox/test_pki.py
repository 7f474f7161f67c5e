import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from infra.sandbox.pki import ATS_ROOTS, CATALOG_FORMAT, PkiError, SandboxPki, endpoint_hosts
from job_documents import load_catalog

ATS_HOST = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
LEGACY_HOST = "a1sandbox2demo.iot.us-east-1.amazonaws.com"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SandboxPki:
    return SandboxPki.create_or_load(tmp_path_factory.mktemp("pki"))


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def all_roots(pki: SandboxPki) -> dict[str, Path]:
    return {"legacy": pki.legacy_root_pem, **pki.ats_root_pems, "device-ca": pki.device_ca_pem}


def test_roots_are_self_signed_cas_valid_for_twenty_years(pki):
    now = datetime.now(UTC)
    for name, path in all_roots(pki).items():
        root = cert(path)
        assert root.subject == root.issuer, name
        root.verify_directly_issued_by(root)
        constraints = root.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert constraints.ca, name
        usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign, name
        assert root.not_valid_after_utc - now > timedelta(days=20 * 365), name
        assert root.not_valid_before_utc <= now, name


@pytest.mark.parametrize(
    ("root", "key_class", "size_or_curve"),
    [
        ("legacy", rsa.RSAPublicKey, 2048),
        ("amazon-root-ca-1", rsa.RSAPublicKey, 2048),
        ("amazon-root-ca-3", ec.EllipticCurvePublicKey, "secp256r1"),
    ],
)
def test_stand_ins_have_the_key_types_of_the_roots_they_replace(
    pki, root, key_class, size_or_curve
):
    key = cert(all_roots(pki)[root]).public_key()
    assert isinstance(key, key_class)
    if isinstance(key, rsa.RSAPublicKey):
        assert key.key_size == size_or_curve
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == size_or_curve


def test_stand_in_names_say_they_are_not_the_real_roots(pki):
    for path in all_roots(pki).values():
        subject = cert(path).subject.rfc4514_string()
        assert "sandbox" in subject.lower()


def test_catalog_lists_the_ats_stand_ins_with_their_fingerprints(pki):
    catalog = json.loads(pki.ats_catalog.read_text())
    assert catalog["catalog"] == CATALOG_FORMAT
    assert catalog["sandbox"] is True
    names = [r["name"] for r in catalog["roots"]]
    assert names == [spec.name for spec in ATS_ROOTS]
    assert {"amazon-root-ca-1", "amazon-root-ca-3"} <= set(names)
    for entry in catalog["roots"]:
        pem = pki.ats_catalog.parent / entry["file"]
        assert pem == pki.ats_root_pems[entry["name"]]
        assert entry["sha256"] == cert(pem).fingerprint(hashes.SHA256()).hex()
    assert pki.legacy_root_pem.parent != pki.ats_catalog.parent


def test_catalog_file_loads_with_the_job_documents_catalog_loader(pki):
    catalog = load_catalog(pki.ats_catalog)
    assert not catalog.is_default
    assert catalog.get("amazon-root-ca-1").key_type.lower().startswith("rsa")
    assert (
        catalog.get("amazon-root-ca-3").sha256
        == json.loads(pki.ats_catalog.read_text())["roots"][1]["sha256"]
    )
    assert catalog.fingerprints() == {
        r["sha256"] for r in json.loads(pki.ats_catalog.read_text())["roots"]
    }


@pytest.mark.parametrize(
    ("kind", "host", "good_root", "bad_root"),
    [
        ("ats", ATS_HOST, "amazon-root-ca-1", "legacy"),
        ("legacy", LEGACY_HOST, "legacy", "amazon-root-ca-1"),
    ],
)
def test_server_certificate_chains_to_its_endpoint_root_only(pki, kind, host, good_root, bad_root):
    leaf = cert(pki.server_cert_pem(kind))
    roots = all_roots(pki)
    now = datetime.now(UTC)
    verifier = (
        PolicyBuilder()
        .store(Store([cert(roots[good_root])]))
        .time(now)
        .build_server_verifier(x509.DNSName(host))
    )
    verifier.verify(leaf, [])
    wrong = (
        PolicyBuilder()
        .store(Store([cert(roots[bad_root])]))
        .time(now)
        .build_server_verifier(x509.DNSName(host))
    )
    with pytest.raises(VerificationError):
        wrong.verify(leaf, [])
    # Like AWS's, the certificate also names *.iot.<region>.amazonaws.com, so the
    # other endpoint of the same region matches it; another region's does not.
    other_host = host.replace("us-east-1", "eu-west-1")
    wrong_name = (
        PolicyBuilder()
        .store(Store([cert(roots[good_root])]))
        .time(now)
        .build_server_verifier(x509.DNSName(other_host))
    )
    with pytest.raises(VerificationError):
        wrong_name.verify(leaf, [])


def test_thing_credentials_carry_the_thing_name_and_chain_to_the_device_ca(pki):
    creds = pki.issue_thing_credentials("thing-0001")
    leaf = cert(creds.cert_pem)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "thing-0001"
    leaf.verify_directly_issued_by(cert(pki.device_ca_pem))
    key = serialization.load_pem_private_key(creds.key_pem.read_bytes(), password=None)
    assert key.public_key() == leaf.public_key()
    assert creds.key_pem.stat().st_mode & 0o077 == 0


def test_issuing_twice_returns_the_same_credentials(pki):
    first = pki.issue_thing_credentials("thing-again")
    before = (first.cert_pem.read_bytes(), first.key_pem.read_bytes())
    second = pki.issue_thing_credentials("thing-again")
    assert second == first
    assert (second.cert_pem.read_bytes(), second.key_pem.read_bytes()) == before


def test_concurrent_issuers_agree_on_one_key_and_certificate(tmp_path, pki):
    other = SandboxPki.create_or_load(pki.directory)
    results = []
    barrier = threading.Barrier(6)

    def issue(source: SandboxPki) -> None:
        barrier.wait()
        results.append(source.issue_thing_credentials("raced-thing"))

    threads = [threading.Thread(target=issue, args=(p,)) for p in [pki, other] * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 6
    assert len(set(results)) == 1
    creds = results[0]
    key = serialization.load_pem_private_key(creds.key_pem.read_bytes(), password=None)
    assert key.public_key() == cert(creds.cert_pem).public_key()
    leftovers = [p.name for p in (pki.directory / "things").iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize("name", ["", "../escape", "with space", "x" * 129, "slash/inside", "é"])
def test_invalid_thing_names_are_refused(pki, name):
    with pytest.raises(PkiError, match="thing name"):
        pki.issue_thing_credentials(name)


def test_reloading_keeps_the_roots(pki):
    again = SandboxPki.create_or_load(pki.directory)
    for name, path in all_roots(again).items():
        assert path.read_bytes() == all_roots(pki)[name].read_bytes()


def test_another_region_gets_its_own_server_names_under_the_same_roots(pki):
    eu = SandboxPki.create_or_load(pki.directory, region="eu-west-1")
    assert eu.ats_root_pems == pki.ats_root_pems
    leaf = cert(eu.server_cert_pem("ats"))
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "a1sandbox2demo-ats.iot.eu-west-1.amazonaws.com" in names.get_values_for_type(
        x509.DNSName
    )
    leaf.verify_directly_issued_by(cert(pki.ats_root_pems["amazon-root-ca-1"]))


@pytest.mark.parametrize(
    ("region", "legacy", "ats"),
    [
        ("us-east-1", LEGACY_HOST, ATS_HOST),
        (
            "cn-north-1",
            "a1sandbox2demo.iot.cn-north-1.amazonaws.com.cn",
            "a1sandbox2demo-ats.iot.cn-north-1.amazonaws.com.cn",
        ),
    ],
)
def test_endpoint_hosts_follow_describe_endpoint(region, legacy, ats):
    assert endpoint_hosts(region, "a1sandbox2demo") == {"legacy": legacy, "ats": ats}


@pytest.mark.parametrize(("region", "prefix"), [("us east", "a1"), ("us-east-1", "A.B")])
def test_endpoint_hosts_refuse_malformed_parts(region, prefix):
    with pytest.raises(PkiError):
        endpoint_hosts(region, prefix)


def test_unknown_manifest_format_is_refused_with_advice(tmp_path):
    (tmp_path / "pki.json").write_text('{"format": "something-else/9"}')
    with pytest.raises(PkiError, match="delete"):
        SandboxPki.create_or_load(tmp_path)


def test_half_present_root_is_refused_rather_than_silently_replaced(tmp_path):
    pki = SandboxPki.create_or_load(tmp_path)
    pki.legacy_root_pem.unlink()
    with pytest.raises(PkiError, match="must exist together"):
        SandboxPki.create_or_load(tmp_path)


def test_a_migrate_document_built_from_the_stand_ins_validates_on_the_device_side(pki):
    from job_documents import (
        Endpoint,
        Operation,
        ValidationPolicy,
        build_document,
        load_catalog,
        validate_document,
    )

    catalog = load_catalog(pki.ats_catalog)
    built = build_document(
        operation=Operation.MIGRATE,
        region="us-east-1",
        campaign="rehearsal",
        wave="canary",
        endpoint=Endpoint(host=ATS_HOST),
        roots=catalog.roots,
        catalog=catalog,
    )
    validated = validate_document(built.text, ValidationPolicy(region="us-east-1", catalog=catalog))
    assert [r.name for r in validated.roots] == ["amazon-root-ca-1", "amazon-root-ca-3"]
    assert validated.endpoint is not None
    assert validated.endpoint.host == ATS_HOST


def test_the_packaged_catalog_refuses_the_stand_ins(pki):
    from job_documents import (
        DocumentInvalid,
        Endpoint,
        Operation,
        ValidationPolicy,
        build_document,
        load_catalog,
        validate_document,
    )

    catalog = load_catalog(pki.ats_catalog)
    built = build_document(
        operation=Operation.MIGRATE,
        region="us-east-1",
        campaign="rehearsal",
        wave="canary",
        endpoint=Endpoint(host=ATS_HOST),
        roots=catalog.roots,
        catalog=catalog,
    )
    with pytest.raises(DocumentInvalid) as caught:
        validate_document(built.text, ValidationPolicy(region="us-east-1"))
    codes = {problem.code for problem in caught.value.problems}
    assert codes & {"unknown-root", "fingerprint-mismatch"}
