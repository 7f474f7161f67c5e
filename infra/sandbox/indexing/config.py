"""The indexing configuration: defaults, validation of UpdateIndexingConfiguration (pure).

Rules (AWS IoT API reference, UpdateIndexingConfiguration / ThingIndexingConfiguration,
and the developer guide's managing-fleet-index page):
- `thingIndexingMode` is OFF, REGISTRY or REGISTRY_AND_SHADOW; connectivity
  (STATUS), Device Defender (VIOLATIONS) and named-shadow (ON) indexing need
  thing indexing on, named shadows need REGISTRY_AND_SHADOW;
- `filter.namedShadowNames` selects the named shadows indexed (at most 10);
- `customFields` give a field a type (Number, String, Boolean) so it can be
  aggregated; managed fields are the service's own and cannot be set.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from infra.sandbox.errors import invalid_request

__all__ = ["DEFAULT_CONFIGURATION", "field_type", "managed_fields", "updated"]

MAX_NAMED_SHADOWS = 10
FIELD_TYPES = ("Number", "String", "Boolean")

DEFAULT_CONFIGURATION: dict[str, Any] = {
    "thingIndexingConfiguration": {
        "thingIndexingMode": "OFF",
        "thingConnectivityIndexingMode": "OFF",
        "deviceDefenderIndexingMode": "OFF",
        "namedShadowIndexingMode": "OFF",
        "customFields": [],
    },
    "thingGroupIndexingConfiguration": {"thingGroupIndexingMode": "OFF", "customFields": []},
}

_REGISTRY_FIELDS = (
    ("thingName", "String"),
    ("thingId", "String"),
    ("thingGroupNames", "String"),
    ("registry.version", "Number"),
)
_CONNECTIVITY_FIELDS = (("connectivity.connected", "Boolean"), ("connectivity.timestamp", "Number"))


def managed_fields(thing: Mapping[str, Any]) -> list[dict[str, str]]:
    """The fields the service indexes with a type of its own, for this configuration."""
    if thing.get("thingIndexingMode", "OFF") == "OFF":
        return []
    fields = list(_REGISTRY_FIELDS)
    if thing.get("thingConnectivityIndexingMode") == "STATUS":
        fields.extend(_CONNECTIVITY_FIELDS)
    return [{"name": name, "type": kind} for name, kind in fields]


def field_type(thing: Mapping[str, Any], name: str) -> str | None:
    """The type a field is indexed with (managed or custom), or None when it is not typed."""
    for field in [*managed_fields(thing), *thing.get("customFields", [])]:
        if field["name"] == name:
            return str(field["type"])
    return None


def _custom_fields(given: Any) -> list[dict[str, str]]:
    fields: list[dict[str, str]] = []
    for field in given or []:
        name, kind = field.get("name"), field.get("type")
        if not name or kind not in FIELD_TYPES:
            raise invalid_request(
                f"custom field {name!r} needs a name and a type of {', '.join(FIELD_TYPES)}"
            )
        fields.append({"name": str(name), "type": str(kind)})
    return fields


def _thing_configuration(given: Mapping[str, Any]) -> dict[str, Any]:
    mode = given["thingIndexingMode"]
    out: dict[str, Any] = {
        "thingIndexingMode": mode,
        "thingConnectivityIndexingMode": given.get("thingConnectivityIndexingMode", "OFF"),
        "deviceDefenderIndexingMode": given.get("deviceDefenderIndexingMode", "OFF"),
        "namedShadowIndexingMode": given.get("namedShadowIndexingMode", "OFF"),
        "customFields": _custom_fields(given.get("customFields")),
    }
    if mode == "OFF" and (
        out["thingConnectivityIndexingMode"] != "OFF"
        or out["deviceDefenderIndexingMode"] != "OFF"
        or out["namedShadowIndexingMode"] != "OFF"
    ):
        raise invalid_request(
            "connectivity, Device Defender and named shadow indexing need thing indexing: "
            "set thingIndexingMode to REGISTRY or REGISTRY_AND_SHADOW"
        )
    if out["namedShadowIndexingMode"] == "ON" and mode != "REGISTRY_AND_SHADOW":
        raise invalid_request("named shadow indexing needs thingIndexingMode REGISTRY_AND_SHADOW")
    given_filter = given.get("filter") or {}
    names = list(given_filter.get("namedShadowNames") or [])
    if len(names) > MAX_NAMED_SHADOWS:
        raise invalid_request(
            f"filter.namedShadowNames holds {len(names)} names; at most {MAX_NAMED_SHADOWS}"
        )
    if given_filter:
        out["filter"] = copy.deepcopy(dict(given_filter))
    return out


def updated(current: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration after an UpdateIndexingConfiguration request (validated)."""
    out = copy.deepcopy(dict(current))
    thing = params.get("thingIndexingConfiguration")
    if thing is not None:
        out["thingIndexingConfiguration"] = _thing_configuration(thing)
    group = params.get("thingGroupIndexingConfiguration")
    if group is not None:
        out["thingGroupIndexingConfiguration"] = {
            "thingGroupIndexingMode": group["thingGroupIndexingMode"],
            "customFields": _custom_fields(group.get("customFields")),
        }
    return out
