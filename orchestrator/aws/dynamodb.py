"""The DynamoDB state store, for the unattended runner (EventBridge -> Lambda).

One table, string keys `pk` and `sk`:

| item      | pk                | sk                    | attributes             |
|-----------|-------------------|-----------------------|------------------------|
| campaign  | `campaign#<name>` | `state`               | `version`, `record`    |
| event     | `events#<name>`   | `<version>#<index>`   | `record`               |
| lease     | `lease#<name>`    | `lease`               | `owner`, `expires_at`  |

A commit is one TransactWriteItems: the campaign item conditional on its
version plus the commit's events conditional on not existing, so state and
events land together or not at all. Leases are conditional puts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from orchestrator.aws.iot import RETRY_CONFIG
from orchestrator.errors import StateError
from orchestrator.store import BaseStateStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["DynamoDbStateStore"]

MAX_EVENTS_PER_COMMIT = 99  # TransactWriteItems takes 100 items, one is the campaign
_LOST_RACE = frozenset({"TransactionCanceledException", "ConditionalCheckFailedException"})


class _LostRaceError(Exception):
    pass


@contextmanager
def _translate(table: str, operation: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _LOST_RACE:
            raise _LostRaceError(code) from exc
        raise StateError(
            f"DynamoDB {operation} on table {table} failed ({code}): "
            f"{exc.response.get('Error', {}).get('Message', '')}; check the table name and "
            "the runner's IAM permissions"
        ) from exc
    except BotoCoreError as exc:
        raise StateError(f"DynamoDB {operation} on table {table} failed: {exc}") from exc


class DynamoDbStateStore(BaseStateStore):
    """Campaign state in a DynamoDB table (conditional writes, transactions)."""

    def __init__(self, ddb: DynamoDBClient, table: str) -> None:
        self._ddb = ddb
        self.table = table

    @classmethod
    def connect(
        cls, table: str, *, region: str | None = None, profile: str | None = None
    ) -> DynamoDbStateStore:
        """A store on `table` through a new boto3 session (adaptive retries)."""
        session = boto3.Session(profile_name=profile, region_name=region)
        return cls(session.client("dynamodb", config=RETRY_CONFIG), table)

    @staticmethod
    def create_table(ddb: DynamoDBClient, table: str) -> None:
        """Create the table (on-demand billing); for tests and first-time set-up."""
        with _translate(table, "CreateTable"):
            ddb.create_table(
                TableName=table,
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )

    def _event_puts(self, name: str, events: list[tuple[int, int, str]]) -> list[dict[str, Any]]:
        if len(events) > MAX_EVENTS_PER_COMMIT:
            raise StateError(f"a commit carries at most {MAX_EVENTS_PER_COMMIT} events")
        return [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {
                        "pk": {"S": f"events#{name}"},
                        "sk": {"S": f"{version:010d}#{index:04d}"},
                        "record": {"S": record},
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
            for version, index, record in events
        ]

    def _insert(self, name: str, record: str, events: list[tuple[int, int, str]]) -> bool:
        item = {
            "Put": {
                "TableName": self.table,
                "Item": {
                    "pk": {"S": f"campaign#{name}"},
                    "sk": {"S": "state"},
                    "version": {"N": "1"},
                    "record": {"S": record},
                },
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        try:
            with _translate(self.table, "TransactWriteItems"):
                self._ddb.transact_write_items(
                    TransactItems=[item, *self._event_puts(name, events)]  # type: ignore[list-item]
                )
        except _LostRaceError:
            return False
        return True

    def _get(self, name: str) -> tuple[str, int] | None:
        with _translate(self.table, "GetItem"):
            answer = self._ddb.get_item(
                TableName=self.table,
                Key={"pk": {"S": f"campaign#{name}"}, "sk": {"S": "state"}},
                ConsistentRead=True,
            )
        item = answer.get("Item")
        if item is None:
            return None
        return item["record"]["S"], int(item["version"]["N"])

    def _replace(
        self, name: str, record: str, expected: int, events: list[tuple[int, int, str]]
    ) -> bool:
        update = {
            "Update": {
                "TableName": self.table,
                "Key": {"pk": {"S": f"campaign#{name}"}, "sk": {"S": "state"}},
                "UpdateExpression": "SET #r = :record, #v = :next",
                "ConditionExpression": "#v = :expected",
                "ExpressionAttributeNames": {"#r": "record", "#v": "version"},
                "ExpressionAttributeValues": {
                    ":record": {"S": record},
                    ":next": {"N": str(expected + 1)},
                    ":expected": {"N": str(expected)},
                },
            }
        }
        try:
            with _translate(self.table, "TransactWriteItems"):
                self._ddb.transact_write_items(
                    TransactItems=[update, *self._event_puts(name, events)]  # type: ignore[list-item]
                )
        except _LostRaceError:
            return False
        return True

    def _read_events(self, name: str) -> list[tuple[int, int, str]]:
        rows: list[tuple[int, int, str]] = []
        start: dict[str, Any] | None = None
        for _ in range(1_000_000):
            kwargs: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            with _translate(self.table, "Query"):
                page = self._ddb.query(
                    TableName=self.table,
                    KeyConditionExpression="pk = :pk",
                    ExpressionAttributeValues={":pk": {"S": f"events#{name}"}},
                    ConsistentRead=True,
                    **kwargs,
                )
            for item in page.get("Items", []):
                version, index = item["sk"]["S"].split("#")
                rows.append((int(version), int(index), item["record"]["S"]))
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        return rows

    def _claim(
        self, name: str, owner: str, until: float, now: float, take_over: str | None
    ) -> bool:
        try:
            with _translate(self.table, "PutItem"):
                self._ddb.put_item(
                    TableName=self.table,
                    Item={
                        "pk": {"S": f"lease#{name}"},
                        "sk": {"S": "lease"},
                        "owner": {"S": owner},
                        "expires_at": {"N": repr(until)},
                    },
                    ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now "
                    "OR #o = :owner OR #o = :take_over",
                    ExpressionAttributeNames={"#o": "owner"},
                    ExpressionAttributeValues={
                        ":now": {"N": repr(now)},
                        ":owner": {"S": owner},
                        ":take_over": {"S": take_over or owner},
                    },
                )
        except _LostRaceError:
            return False
        return True

    def _unclaim(self, name: str, owner: str) -> None:
        try:
            with _translate(self.table, "DeleteItem"):
                self._ddb.delete_item(
                    TableName=self.table,
                    Key={"pk": {"S": f"lease#{name}"}, "sk": {"S": "lease"}},
                    ConditionExpression="#o = :owner",
                    ExpressionAttributeNames={"#o": "owner"},
                    ExpressionAttributeValues={":owner": {"S": owner}},
                )
        except _LostRaceError:
            return

    def _holder(self, name: str) -> str | None:
        with _translate(self.table, "GetItem"):
            answer = self._ddb.get_item(
                TableName=self.table,
                Key={"pk": {"S": f"lease#{name}"}, "sk": {"S": "lease"}},
                ConsistentRead=True,
            )
        item = answer.get("Item")
        return None if item is None else item["owner"]["S"]

    def _names(self) -> list[str]:
        names: list[str] = []
        start: dict[str, Any] | None = None
        for _ in range(1_000_000):
            kwargs: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            with _translate(self.table, "Scan"):
                page = self._ddb.scan(
                    TableName=self.table,
                    FilterExpression="sk = :state",
                    ExpressionAttributeValues={":state": {"S": "state"}},
                    **kwargs,
                )
            names.extend(
                item["pk"]["S"].removeprefix("campaign#") for item in page.get("Items", [])
            )
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        return names
