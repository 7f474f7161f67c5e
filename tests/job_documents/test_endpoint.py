"""Endpoint rules: only `<prefix>-ats.iot.<region>.<partition domain>` passes."""

from __future__ import annotations

import pytest

from job_documents import EndpointRejected, check_ats_endpoint, partition_suffix


@pytest.mark.parametrize(
    ("host", "region"),
    [
        ("a1b2c3d4e5f6g7-ats.iot.us-east-1.amazonaws.com", "us-east-1"),
        ("a1sandbox2demo-ats.iot.eu-west-1.amazonaws.com", "eu-west-1"),
        ("abc123-ats.iot.ap-southeast-2.amazonaws.com", "ap-southeast-2"),
        ("abc123-ats.iot.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
        ("a1sandbox2demo-ats.iot.cn-north-1.amazonaws.com.cn", "cn-north-1"),
        ("abc123-ats.iot.cn-northwest-1.amazonaws.com.cn", "cn-northwest-1"),
        # what DescribeEndpoint(iot:Data-ATS) answers in the China regions
        ("a2jtec7plm36gl.ats.iot.cn-north-1.amazonaws.com.cn", "cn-north-1"),
        ("abc123.ats.iot.cn-northwest-1.amazonaws.com.cn", "cn-northwest-1"),
    ],
)
def test_ats_endpoints_of_the_region_are_accepted(host, region):
    check_ats_endpoint(host, region)


@pytest.mark.parametrize(
    ("host", "region", "code", "says"),
    [
        ("mqtts://a1-ats.iot.us-east-1.amazonaws.com", "us-east-1", "endpoint-scheme", "scheme"),
        ("https://a1-ats.iot.us-east-1.amazonaws.com/", "us-east-1", "endpoint-scheme", "scheme"),
        ("a1-ats.iot.us-east-1.amazonaws.com/mqtt", "us-east-1", "endpoint-host", "URL"),
        ("a1-ats.iot.us-east-1.amazonaws.com:8883", "us-east-1", "endpoint-port", "port"),
        ("52.1.2.3", "us-east-1", "endpoint-ip", "IP address"),
        ("::1", "us-east-1", "endpoint-ip", "IP address"),
        ("[2001:db8::1]", "us-east-1", "endpoint-ip", "IP address"),
        ("A1-ats.iot.us-east-1.amazonaws.com", "us-east-1", "endpoint-case", "uppercase"),
        ("a1-ats.iot.us-east-1.AMAZONAWS.com", "us-east-1", "endpoint-case", "uppercase"),
        ("a1-ats.iot.us-east-1.amazonaws.com.", "us-east-1", "endpoint-trailing-dot", "dot"),
        ("evil.a1-ats.iot.us-east-1.amazonaws.com", "us-east-1", "endpoint-labels", "extra"),
        ("a1-ats.iot.us-east-1.amazonaws.com.evil.io", "us-east-1", "endpoint-suffix", "not an"),
        ("a1-ats.iot.us-east-1.amazonaws.co", "us-east-1", "endpoint-suffix", "not an"),
        ("a1-ats.iot.us-east-1.amazonaws.com-evil.io", "us-east-1", "endpoint-suffix", "not an"),
        ("a1-ats.iotx.us-east-1.amazonaws.com", "us-east-1", "endpoint-suffix", "not an"),
        ("a1-ats.data.iot.us-east-1.amazonaws.com", "us-east-1", "endpoint-labels", "extra"),
        ("a1.iot.us-east-1.amazonaws.com", "us-east-1", "endpoint-legacy", "legacy"),
        ("a1-ats.iot.eu-west-1.amazonaws.com", "us-east-1", "endpoint-region", "eu-west-1"),
        ("a1-ats.iot.us-east-1.amazonaws.com.cn", "us-east-1", "endpoint-partition", "partition"),
        ("a1-ats.iot.cn-north-1.amazonaws.com", "cn-north-1", "endpoint-partition", "partition"),
        ("a-1-ats.iot.us-east-1.amazonaws.com", "us-east-1", "endpoint-prefix", "prefix"),
        ("-ats.iot.us-east-1.amazonaws.com", "us-east-1", "endpoint-prefix", "prefix"),
        ("a1.ats.iot.us-east-1.amazonaws.com", "us-east-1", "endpoint-labels", "extra"),
        ("x.a1.ats.iot.cn-north-1.amazonaws.com.cn", "cn-north-1", "endpoint-labels", "extra"),
        ("a1.ats-ats.iot.cn-north-1.amazonaws.com.cn", "cn-north-1", "endpoint-labels", "extra"),
        ("a1.iot.cn-north-1.amazonaws.com.cn", "cn-north-1", "endpoint-legacy", "legacy"),
        ("a1-ats.iot.us-east-1.amazonaws.com ", "us-east-1", "endpoint-host", "spaces"),
        ("a1-\u0430ts.iot.us-east-1.amazonaws.com", "us-east-1", "endpoint-host", "non-ASCII"),
        ("", "us-east-1", "endpoint-host", "empty"),
        ("a1..iot.us-east-1.amazonaws.com", "us-east-1", "endpoint-host", "empty label"),
        ("a1-ats.iot.us-east-1.amazonaws.com", "US-EAST-1", "region-invalid", "region"),
        ("a1-ats.iot.us-east-1.amazonaws.com", "useast1", "region-invalid", "region"),
        ("a1-ats.iot.cn-south-9.amazonaws.com.cn", "cn-south-9", "region-invalid", "China"),
        ("a1-ats.iot.us-iso-east-1.c2s.ic.gov", "us-iso-east-1", "region-invalid", "isolated"),
    ],
)
def test_anything_else_is_refused_with_a_message_naming_the_problem(host, region, code, says):
    with pytest.raises(EndpointRejected) as caught:
        check_ats_endpoint(host, region)
    assert caught.value.code == code
    assert says in str(caught.value)


def test_the_partition_domain_follows_the_region():
    assert partition_suffix("us-east-1") == "amazonaws.com"
    assert partition_suffix("cn-northwest-1") == "amazonaws.com.cn"
