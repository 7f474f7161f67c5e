# ruff: noqa: INP001 - a developer script beside the shell ones, not a package
"""Write job_documents/data/regions.json from botocore's endpoint data.

The device-side validator must not import botocore (device installs do not have
it), so the regions of the partitions the contract supports ship as package
data; `tests/job_documents/test_regions.py` fails when they drift from the
installed botocore. Run `python scripts/generate_regions.py` after upgrading
botocore.
"""

from __future__ import annotations

import json
from pathlib import Path

import botocore
from botocore.loaders import create_loader

PARTITIONS = ("aws", "aws-cn", "aws-us-gov")
TARGET = Path(__file__).resolve().parents[1] / "job_documents" / "data" / "regions.json"


def regions_from_botocore() -> dict[str, object]:
    endpoints = create_loader().load_data("endpoints")
    partitions = {
        p["partition"]: sorted(p["regions"])
        for p in endpoints["partitions"]
        if p["partition"] in PARTITIONS
    }
    return {"source": f"botocore {botocore.__version__} endpoints.json", "partitions": partitions}


def render() -> str:
    return json.dumps(regions_from_botocore(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET}")  # noqa: T201 - a developer tool reports what it wrote
