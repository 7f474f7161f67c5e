"""The public test helpers make what they promise (other areas' tests rely on them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from job_documents import CertificateRejected
from job_documents._pem import inspect_root_pem
from job_documents.testing import make_leaf, make_root_ca


@pytest.mark.parametrize("kind", ["ec-p256", "ec-p384", "rsa-2048", "ed25519"])
def test_make_root_ca_makes_a_self_signed_ca_of_each_key_kind(kind):
    root = make_root_ca(f"Root {kind}", key_kind=kind)
    info = inspect_root_pem(root.pem)
    assert info.sha256 == root.sha256
    assert info.subject == f"Root {kind}"


def test_make_leaf_is_issued_by_its_root_for_the_host():
    root = make_root_ca()
    leaf = make_leaf(root, "a1-ats.iot.eu-west-1.amazonaws.com")
    leaf.certificate.verify_directly_issued_by(root.certificate)
    names = leaf.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.value.get_values_for_type(x509.DNSName) == ["a1-ats.iot.eu-west-1.amazonaws.com"]
    with pytest.raises(CertificateRejected, match="not a CA"):
        inspect_root_pem(leaf.pem)


def test_dates_padding_and_forgery_options_take_effect():
    start = datetime(2030, 1, 1, tzinfo=UTC)
    dated = make_root_ca(not_before=start, not_after=start + timedelta(days=10))
    assert dated.certificate.not_valid_after_utc == start + timedelta(days=10)
    assert len(make_root_ca(padding_bytes=2_000).pem) > len(make_root_ca().pem) + 2_000
    with pytest.raises(CertificateRejected, match="does not verify"):
        inspect_root_pem(make_root_ca(self_signed_by=make_root_ca()).pem)
    with pytest.raises(CertificateRejected, match="not a CA"):
        inspect_root_pem(make_root_ca(ca=False).pem)
