"""Whether a region can have a legacy `iot:Data` (VeriSign) endpoint at all.

AWS IoT Core regions launched from 9 May 2018 (Asia Pacific (Mumbai) first) serve
only ATS certificates: a fleet there never had a legacy endpoint, so a campaign has
nothing to migrate there. `data/legacy_endpoints.json` holds the table of
docs/regions.md (with how sure each row is); a region it does not list is one of the
later, ATS-only regions.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Final, Literal, cast

__all__ = ["LegacyEndpoint", "legacy_endpoint"]

#: "yes": the region ran AWS IoT Core before 9 May 2018; "probably": believed, not
#: confirmed; "unconfirmed": GovCloud and China, not researched; "no": ATS only.
LegacyEndpoint = Literal["yes", "probably", "unconfirmed", "no"]
_VALUES: Final = frozenset({"yes", "probably", "unconfirmed", "no"})


@cache
def _table() -> tuple[dict[str, LegacyEndpoint], LegacyEndpoint]:
    text = (
        resources.files("job_documents")
        .joinpath("data", "legacy_endpoints.json")
        .read_text("utf-8")
    )
    data = json.loads(text)
    rows = {str(k): str(v) for k, v in data["regions"].items()}
    default = str(data["default"])
    if not set(rows.values()) | {default} <= _VALUES:
        raise ValueError(
            "legacy_endpoints.json holds a value other than yes/probably/unconfirmed/no"
        )
    return cast("dict[str, LegacyEndpoint]", rows), cast("LegacyEndpoint", default)


def legacy_endpoint(region: str) -> LegacyEndpoint:
    """Whether `region` can have a legacy iot:Data endpoint (docs/regions.md)."""
    rows, default = _table()
    return rows.get(region, default)
