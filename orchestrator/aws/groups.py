"""The thing groups of waves chosen by query or sample, through boto3: the `WaveGroupsApi`.

Every call is `self._iot.<operation>(...)` (the IAM policy test reads them). A group
whose deterministic name is taken is adopted when it is the campaign's own — a
dynamic group with the same query, a static group with the campaign's description —
and is a `GroupConflictError` otherwise, so a retried or crashed reconcile never
makes a second group nor takes over someone else's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import structlog

from orchestrator.aws._errors import pages, translated
from orchestrator.aws.indexing import INDEX
from orchestrator.errors import AwsError, GroupConflictError, IndexingUnavailableError

if TYPE_CHECKING:
    from mypy_boto3_iot import IoTClient

__all__ = ["ThingGroupsAdapter", "field_value"]

log = structlog.get_logger(__name__)

_EXISTS = "ResourceAlreadyExistsException"
_PAGE = 100  # SearchIndex maxResults' maximum


def _translate(operation: str, group: str) -> AbstractContextManager[None]:
    def refine(code: str, message: str) -> Exception | None:
        if code == "IndexNotReadyException" or (
            operation == "SearchIndex" and code == "ResourceNotFoundException"
        ):
            return IndexingUnavailableError(
                f"fleet indexing is not available ({code}: {message}); waves chosen by query "
                "or sample need it: turn thing indexing on (aws iot "
                "update-indexing-configuration)",
                code=code,
            )
        return None

    return translated(operation, where=f"thing group {group}", refine=refine, check="the query")


def field_value(document: Any, field: str) -> str | None:
    """A SearchIndex thing document's value of `attributes.X` or `shadow.name.S.<path>`."""
    if field.startswith("attributes."):
        value = (document.get("attributes") or {}).get(field.removeprefix("attributes."))
        return None if value is None else str(value)
    if not field.startswith("shadow.name.") or "shadow" not in document:
        return None
    try:
        node: Any = json.loads(document["shadow"])
    except (TypeError, ValueError):
        return None
    for part in ["name", *field.removeprefix("shadow.name.").split(".")]:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, dict | list | bool):  # as the shadow has it: [1,2], true
        return json.dumps(node, sort_keys=True, separators=(",", ":"))
    return None if node is None else str(node)


class ThingGroupsAdapter:
    """`WaveGroupsApi` over a boto3 "iot" client."""

    def __init__(self, iot: IoTClient) -> None:
        self._iot = iot

    def ensure_dynamic_group(self, name: str, query: str, description: str) -> str:
        try:
            with _translate("CreateDynamicThingGroup", name):
                self._iot.create_dynamic_thing_group(
                    thingGroupName=name,
                    queryString=query,
                    indexName=INDEX,
                    thingGroupProperties={"thingGroupDescription": description},
                )
            log.info("dynamic-group-created", group=name)
        except AwsError as exc:
            if exc.code != _EXISTS:
                raise
        with _translate("DescribeThingGroup", name):
            found: Any = self._iot.describe_thing_group(thingGroupName=name)
        if found.get("queryString") != query:
            raise GroupConflictError(
                f"thing group {name} exists and is not this wave's dynamic group (its query "
                "differs, or it is static); delete it (aws iot delete-dynamic-thing-group) or "
                "rename the campaign",
                code=_EXISTS,
            )
        return str(found.get("status", "ACTIVE"))

    def ensure_static_group(self, name: str, description: str) -> list[str]:
        try:
            with _translate("CreateThingGroup", name):
                self._iot.create_thing_group(
                    thingGroupName=name,
                    thingGroupProperties={"thingGroupDescription": description},
                )
        except AwsError as exc:
            if exc.code != _EXISTS:
                raise  # taken with other properties: DescribeThingGroup tells whose
        with _translate("DescribeThingGroup", name):
            found: Any = self._iot.describe_thing_group(thingGroupName=name)
        have = (found.get("thingGroupProperties") or {}).get("thingGroupDescription")
        if "queryString" in found or have != description:
            raise GroupConflictError(
                f"thing group {name} exists and is not this campaign's sample group; delete it "
                "or rename the campaign",
                code=_EXISTS,
            )
        things: list[str] = []
        for page in pages(
            self._iot.list_things_in_thing_group,
            lambda: _translate("ListThingsInThingGroup", name),
            thingGroupName=name,
            maxResults=250,
        ):
            things.extend(page.get("things", []))
        return things

    def indexed_values(self, query: str, field: str) -> dict[str, str | None]:
        values: dict[str, str | None] = {}
        for page in pages(
            self._iot.search_index,
            lambda: _translate("SearchIndex", "-"),
            indexName=INDEX,
            queryString=query,
            maxResults=_PAGE,
        ):
            for thing in page.get("things", []):
                if "thingName" in thing:
                    values[str(thing["thingName"])] = field_value(thing, field)
        return values

    def add_things(self, group: str, things: Sequence[str]) -> list[str]:
        refused: list[str] = []
        for thing in things:
            try:
                with _translate("AddThingToThingGroup", group):
                    self._iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
            except AwsError as exc:
                if exc.code != "InvalidRequestException":
                    raise
                # A thing already in ten groups (or in this group's hierarchy) cannot join:
                # the sample goes on without it.
                log.warning("sample-thing-refused", group=group, thing=thing, error=str(exc))
                refused.append(thing)
        return refused
