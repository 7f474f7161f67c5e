"""The fleet-indexing query language: parsing and matching (pure)."""

from __future__ import annotations

import pytest

from infra.sandbox.indexing.evaluate import flatten, matches
from infra.sandbox.indexing.query import QueryError, parse
from job_documents.fleet_query import MAX_NESTING

THING = {
    "thingName": ["device-00042"],
    "thingGroupNames": ["canary", "eu"],
    "registry.version": [3],
    **flatten({"model": "gw-2", "fw": "17"}, "attributes"),
    **flatten(
        {
            "reported": {
                "endpoint": "a1sandbox2demo.iot.us-east-1.amazonaws.com",
                "port": 8883,
                "roots": ["verisign-class3-g5", "amazon-root-ca-1"],
                "phase": "IDLE",
            },
            "version": 4,
        },
        "shadow.name.ca-migration",
    ),
}


@pytest.mark.parametrize(
    ("query", "hit"),
    [
        ("thingName:device-00042", True),
        ("thingName:DEVICE-00042", True),  # search is case-insensitive
        ("thingName:device-0004?", True),
        ("thingName:device-000?", False),
        ("thingName:device*", True),
        ("thingName:*42", True),
        ("thingName:other", False),
        ("thingGroupNames:eu", True),
        ("thingGroupNames:us", False),
        ("attributes.model:gw-2", True),
        ("attributes.fw:[10 TO 20]", True),
        ("attributes.fw:[18 TO 20]", False),
        ("attributes.fw:{17 TO 20]", False),
        ("attributes.fw:[10 TO 17}", False),
        ("attributes.fw:[10 TO 17]", True),
        ("attributes.fw:>16", True),
        ("attributes.fw:>17", False),
        ("attributes.fw:>=17", True),
        ("attributes.fw:<17", False),
        ("attributes.fw:<=17", True),
        ("attributes.fw:[* TO 9]", False),
        ("attributes.model:[gw-1 TO gw-3]", True),
        ("registry.version:3", True),
        ("shadow.name.ca-migration.reported.endpoint:*", True),
        ("shadow.name.ca-migration.reported.lastJob:*", False),
        ("shadow.name.ca-migration.reported.endpoint:*-ats.iot.*", False),
        ("shadow.name.ca-migration.reported.roots:amazon-root-ca-1", True),
        ("shadow.name.ca-migration.reported.port:8883", True),
        ('shadow.name.ca-migration.reported.phase:"IDLE"', True),
        ('thingName:"device*"', False),  # wildcards are literal inside quotes
        ("thingName:device\\*", False),  # and when escaped
        ("thingGroupNames:eu AND attributes.model:gw-2", True),
        ("thingGroupNames:eu attributes.model:gw-3", False),  # default operator AND
        ("thingGroupNames:us OR attributes.model:gw-2", True),
        ("NOT thingGroupNames:us", True),
        ("NOT thingGroupNames:eu", False),
        ("thingGroupNames:eu AND -attributes.model:gw-2", False),
        ("thingName:(device* AND -other)", True),
        ("thingGroupNames:(us OR canary)", True),
        ("(thingGroupNames:us OR thingGroupNames:eu) AND registry.version:3", True),
        ("thingGroupNames:us OR thingGroupNames:eu AND registry.version:4", False),
        ("gw-2", True),  # no field: any field
        ("connectivity.connected:true", False),
    ],
)
def test_a_query_matches_as_the_developer_guide_describes(query: str, hit: bool) -> None:
    assert matches(parse(query), THING) is hit


@pytest.mark.parametrize(
    "query",
    [
        "",
        "   ",
        "thingName:(a OR b",
        "thingName:a)",
        "attributes.fw:[1 2]",
        "attributes.fw:[1 TO 2",
        'thingName:"open',
        "AND thingName:a",
        "thingName:a OR",
        "thingName:",
        "thingName:(attributes.x:1)",
        "(" * 33 + "thingName:a" + ")" * 33,
        "NOT " * 33 + "thingName:a",
        "-" * 2000 + "a",
    ],
)
def test_a_query_that_does_not_parse_says_so(query: str) -> None:
    with pytest.raises(QueryError):
        parse(query)


def test_nesting_is_bounded_below_the_stack_and_up_to_the_bound_it_parses() -> None:
    """A hostile query nests hundreds deep: refused by name, never a RecursionError."""
    assert parse("(" * MAX_NESTING + "thingName:a" + ")" * MAX_NESTING)
    for depth in (MAX_NESTING + 1, 500, 1000):
        with pytest.raises(QueryError, match="deeper than"):
            parse("(" * depth + "thingName:a" + ")" * depth)


def test_arrays_give_one_value_per_element() -> None:
    assert flatten({"a": [{"b": 1}, {"b": 2}], "c": None}) == {"a.b": [1, 2]}
