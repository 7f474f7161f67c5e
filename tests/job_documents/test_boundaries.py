"""The document checks at their edges: the 253-character host and the root's expiry instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from job_documents import EndpointRejected, check_ats_endpoint
from job_documents._pem import check_root_validity, inspect_root_pem
from job_documents.errors import CertificateRejected
from job_documents.testing import make_root_ca

REGION = "us-east-1"
SUFFIX = ".iot.us-east-1.amazonaws.com"


def _host(length: int) -> str:
    """An AWS-IoT-shaped host of exactly `length` characters with extra labels before -ats."""
    head = length - len(SUFFIX) - len("-ats")
    labels = []
    while head > 0:
        label = "a" * min(head, 60)
        labels.append(label)
        head -= len(label) + 1
    text = ".".join(labels).rstrip(".")
    host = text + "a" * (length - len(SUFFIX) - len("-ats") - len(text)) + "-ats" + SUFFIX
    assert len(host) == length
    return host


def _code(host: str) -> str:
    with pytest.raises(EndpointRejected) as caught:
        check_ats_endpoint(host, REGION)
    return caught.value.code


@pytest.mark.parametrize("length", [254, 255, 400])
def test_a_host_longer_than_253_characters_is_refused_for_its_length(length: int) -> None:
    with pytest.raises(EndpointRejected, match="longer than 253 characters") as caught:
        check_ats_endpoint(_host(length), REGION)
    assert caught.value.code == "endpoint-host"


@pytest.mark.parametrize("length", [252, 253])
def test_a_host_of_up_to_253_characters_passes_the_length_rule(length: int) -> None:
    # the same shape one character shorter: refused by the next rule (extra labels), not length
    assert _code(_host(length)) == "endpoint-labels"


def test_the_longest_valid_prefix_is_accepted() -> None:
    check_ats_endpoint("a" * 63 + "-ats" + SUFFIX, REGION)
    assert _code("a" * 64 + "-ats" + SUFFIX) == "endpoint-prefix"


NOT_AFTER = datetime(2031, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def dated_root():
    root = make_root_ca(not_before=NOT_AFTER - timedelta(days=3650), not_after=NOT_AFTER)
    info = inspect_root_pem(root.pem)
    assert info.not_after == NOT_AFTER
    return info


def test_a_root_is_expired_at_its_exact_not_after_instant(dated_root) -> None:
    with pytest.raises(CertificateRejected) as caught:
        check_root_validity(dated_root, now=NOT_AFTER, margin=timedelta(0))
    assert caught.value.code == "pem-expired"


def test_a_root_is_still_valid_one_second_before_not_after(dated_root) -> None:
    check_root_validity(dated_root, now=NOT_AFTER - timedelta(seconds=1), margin=timedelta(0))


def test_the_expiry_margin_is_inclusive_of_its_last_instant(dated_root) -> None:
    margin = timedelta(days=30)
    check_root_validity(dated_root, now=NOT_AFTER - margin, margin=margin)
    with pytest.raises(CertificateRejected) as caught:
        check_root_validity(
            dated_root, now=NOT_AFTER - margin + timedelta(seconds=1), margin=margin
        )
    assert caught.value.code == "pem-expires-soon"


def test_a_root_is_valid_from_its_exact_not_before_instant(dated_root) -> None:
    start = dated_root.not_before
    check_root_validity(dated_root, now=start, margin=timedelta(0))
    with pytest.raises(CertificateRejected) as caught:
        check_root_validity(dated_root, now=start - timedelta(seconds=1), margin=timedelta(0))
    assert caught.value.code == "pem-not-yet-valid"


# -- what `make mutate` found unchecked in the endpoint rules ------------------------------


@pytest.mark.parametrize(
    ("host", "code"),
    [
        ("mqtt:broker", "endpoint-scheme"),  # a scheme without //
        ("Mqtt:broker", "endpoint-scheme"),  # schemes are case-insensitive
        ("1://broker", "endpoint-scheme"),  # :// alone is enough
        ("10.0.0.1X", "endpoint-case"),  # not an IP address: only "[]" is stripped
        ("Xyz-ats" + SUFFIX, "endpoint-case"),
        (".a1-ats" + SUFFIX, "endpoint-host"),  # an empty first label
        ("a1b2-ats" + SUFFIX + ":8883", "endpoint-port"),
    ],
)
def test_each_malformed_host_gets_its_own_code(host: str, code: str) -> None:
    assert _code(host) == code


@pytest.mark.parametrize("prefix", ["abc", "a", "abcdefgh"])
def test_a_china_endpoint_with_a_dot_before_ats_is_accepted(prefix: str) -> None:
    check_ats_endpoint(f"{prefix}.ats.iot.cn-north-1.amazonaws.com.cn", "cn-north-1")


def test_a_china_endpoint_keeps_its_whole_prefix_for_the_prefix_rule() -> None:
    with pytest.raises(EndpointRejected) as caught:
        check_ats_endpoint("abcd_x.ats.iot.cn-north-1.amazonaws.com.cn", "cn-north-1")
    assert caught.value.code == "endpoint-prefix"


@pytest.mark.parametrize(
    ("host", "region", "says"),
    [
        ("", REGION, r"give <prefix>-ats\.iot\.us-east-1\.amazonaws\.com"),
        ("a1-ats" + SUFFIX + ":443", REGION, r"separately \(8883, or 443 with ALPN\)$"),
        ("A1-ats" + SUFFIX, REGION, r"lowercase, as DescribeEndpoint returns it$"),
    ],
)
def test_the_endpoint_messages_say_what_to_do(host: str, region: str, says: str) -> None:
    with pytest.raises(EndpointRejected, match=says):
        check_ats_endpoint(host, region)


def test_an_isolated_region_is_refused_with_what_to_use() -> None:
    with pytest.raises(
        EndpointRejected,
        match=r"does not know: use a commercial, GovCloud or China region$",
    ):
        check_ats_endpoint("a1-ats.iot.us-iso-east-1.c2s.ic.gov", "us-iso-east-1")
