"""Endpoint rules: a document may only point devices at an ATS data endpoint of its region.

Accepted: `<prefix>-ats.iot.<region>.amazonaws.com`, and `.amazonaws.com.cn` for
the China regions; `<prefix>` is the account's lowercase alphanumeric endpoint
prefix. In the China regions DescribeEndpoint(iot:Data-ATS) answers with
`<prefix>.ats.iot.<region>.amazonaws.com.cn` (a dot, not a dash, before `ats`),
so that one form is accepted there too, and only there. Everything else is
refused with a message naming what is wrong: schemes, paths, ports in the
host, IP literals, uppercase, trailing dots, extra labels, other suffixes, the
legacy (non -ats) endpoint, and a region or partition that does not match.
There is deliberately no override for the host rules.

Regions are checked against the regions of the commercial, China and GovCloud
partitions in botocore's endpoint data, shipped as package data
(`data/regions.json`, written by `scripts/generate_regions.py`: the device-side
validator cannot import botocore). A region AWS opened after that list was
generated is accepted only when the caller names it (`extra_regions`): an
explicit opt-in, never a pattern that lets `zz-fake-9` through.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Collection
from functools import cache
from importlib import resources

from job_documents.errors import EndpointRejected

__all__ = [
    "REGION_RE",
    "check_ats_endpoint",
    "check_region",
    "known_regions",
    "partition_suffix",
]

REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+){1,2}-[0-9]{1,2}")
_CHINA_REGIONS = frozenset({"cn-north-1", "cn-northwest-1"})
_CHINA_SUFFIX = "amazonaws.com.cn"
_ISOLATED = re.compile(r"[a-z]{2}-iso[a-z]?-")
_PREFIX_RE = re.compile(r"[a-z0-9]{1,63}")
_IOT_HOST = re.compile(
    r"(?P<head>.+)\.iot\.(?P<region>[a-z0-9-]+)\.(?P<suffix>amazonaws\.com(?:\.cn)?)"
)
_MAX_HOST = 253


@cache
def _region_data() -> tuple[str, frozenset[str]]:
    text = resources.files("job_documents").joinpath("data", "regions.json").read_text("utf-8")
    data = json.loads(text)
    regions = frozenset(r for names in data["partitions"].values() for r in names)
    return str(data["source"]), regions


def known_regions() -> frozenset[str]:
    """The regions of the supported partitions (commercial, China, GovCloud) this package knows."""
    return _region_data()[1]


def check_region(region: str, extra_regions: Collection[str] = ()) -> None:
    """Refuse a string that is not a known AWS region of a supported partition.

    `extra_regions` names regions newer than the packaged list that the caller
    accepts explicitly.
    """
    if not isinstance(region, str) or not REGION_RE.fullmatch(region):
        raise EndpointRejected(
            "region-invalid",
            f"{region!r} is not an AWS region name (like us-east-1 or cn-north-1)",
        )
    if _ISOLATED.match(region):
        raise EndpointRejected(
            "region-invalid",
            f"region {region} is in an isolated partition whose IoT endpoints this tool "
            "does not know: use a commercial, GovCloud or China region",
        )
    if region in extra_regions:
        return
    if region.startswith("cn-") and region not in _CHINA_REGIONS:
        raise EndpointRejected(
            "region-invalid",
            f"{region!r} is not an AWS China region (cn-north-1, cn-northwest-1)",
        )
    source, regions = _region_data()
    if region not in regions:
        raise EndpointRejected(
            "region-invalid",
            f"{region!r} is not an AWS region ({source}): check the spelling; a region AWS "
            "opened since must be allowed explicitly (--allow-region in the CLI, "
            "extra_regions in Python)",
        )


def partition_suffix(region: str, extra_regions: Collection[str] = ()) -> str:
    """The DNS suffix of `region`'s partition: amazonaws.com, or amazonaws.com.cn in China."""
    check_region(region, extra_regions)
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def _reject(code: str, message: str) -> EndpointRejected:
    return EndpointRejected(code, message)


def check_ats_endpoint(host: str, region: str, extra_regions: Collection[str] = ()) -> None:
    """Raise EndpointRejected unless `host` is an ATS data endpoint of `region`.

    `.code` says which rule failed (endpoint-scheme, endpoint-port, endpoint-ip,
    endpoint-case, endpoint-trailing-dot, endpoint-labels, endpoint-suffix,
    endpoint-legacy, endpoint-prefix, endpoint-region, endpoint-partition,
    endpoint-host, region-invalid).
    """
    suffix = partition_suffix(region, extra_regions)
    expected = f"<prefix>-ats.iot.{region}.{suffix}"
    if not isinstance(host, str) or not host:
        raise _reject("endpoint-host", f"the endpoint host is empty: give {expected}")
    if len(host) > _MAX_HOST:
        raise _reject("endpoint-host", f"the endpoint host is longer than {_MAX_HOST} characters")
    if "://" in host or re.match(r"[A-Za-z][A-Za-z0-9+.-]*:(?!\d+$)", host):
        raise _reject(
            "endpoint-scheme",
            f"{host!r} has a URL scheme: give the host name only, e.g. {expected}",
        )
    if any(c in host for c in "/?#@\\"):
        raise _reject(
            "endpoint-host", f"{host!r} is a URL, not a host name: give the host only ({expected})"
        )
    if not host.isascii() or not host.isprintable() or any(c.isspace() for c in host):
        raise _reject(
            "endpoint-host",
            f"{host!r} contains spaces, control or non-ASCII characters: give {expected}",
        )
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        raise _reject(
            "endpoint-ip",
            f"{host!r} is an IP address: devices must connect by the ATS host name "
            f"({expected}) so TLS can verify it",
        )
    if ":" in host:
        raise _reject(
            "endpoint-port",
            f"{host!r} has a port in the host: give the host alone and the port separately "
            "(8883, or 443 with ALPN)",
        )
    if host.endswith("."):
        raise _reject(
            "endpoint-trailing-dot",
            f"{host!r} ends with a dot: remove it (the certificate names the host without it)",
        )
    if host != host.lower():
        raise _reject(
            "endpoint-case",
            f"{host!r} has uppercase letters: write the host in lowercase, as DescribeEndpoint "
            "returns it",
        )
    if ".." in host or host.startswith("."):
        raise _reject("endpoint-host", f"{host!r} has an empty label")
    match = _IOT_HOST.fullmatch(host)
    if match is None:
        raise _reject(
            "endpoint-suffix",
            f"{host!r} is not an AWS IoT data endpoint: expected {expected}",
        )
    if match["region"] != region:
        raise _reject(
            "endpoint-region",
            f"{host!r} is an endpoint of region {match['region']}, but the campaign's region is "
            f"{region}: use the endpoint of {region}",
        )
    if match["suffix"] != suffix:
        raise _reject(
            "endpoint-partition",
            f"{host!r} ends in {match['suffix']}, but region {region} is in the partition "
            f"whose domain is {suffix}",
        )
    head = match["head"]
    if match["suffix"] == _CHINA_SUFFIX and head.endswith(".ats") and "." not in head[:-4]:
        head = head[: -len(".ats")] + "-ats"
    if "." in head:
        raise _reject(
            "endpoint-labels",
            f"{host!r} has extra labels before the endpoint prefix: expected {expected}",
        )
    if not head.endswith("-ats"):
        raise _reject(
            "endpoint-legacy",
            f"{host!r} is the legacy VeriSign (iot:Data) endpoint: use the ATS endpoint "
            f"(aws iot describe-endpoint --endpoint-type iot:Data-ATS), {expected}",
        )
    if not _PREFIX_RE.fullmatch(head[: -len("-ats")]):
        raise _reject(
            "endpoint-prefix",
            f"{host!r} does not start with an account endpoint prefix (lowercase letters and "
            f"digits, then -ats): expected {expected}",
        )
