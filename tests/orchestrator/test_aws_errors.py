"""The one translation of botocore's errors that every AWS IoT adapter uses."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from orchestrator.aws._errors import translated
from orchestrator.aws.executions import ExecutionReader
from orchestrator.aws.indexing import FleetIndexAdapter
from orchestrator.errors import AwsError, IndexingUnavailableError


def _client_error(code: str, message: str = "no") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "Op")


def test_an_error_names_the_operation_what_it_acted_on_and_what_to_check():
    with pytest.raises(AwsError) as caught, translated("SearchIndex", where="group g", check="x"):
        raise _client_error("InvalidQueryException", "bad query")
    assert caught.value.code == "InvalidQueryException"
    assert str(caught.value) == (
        "AWS IoT SearchIndex failed (InvalidQueryException: bad query) for group g; check x, "
        "the credentials, region and endpoint (--region, --endpoint-url, --profile)"
    )


def test_a_refined_code_raises_the_adapters_own_error_and_others_fall_through():
    def refine(code: str, message: str) -> Exception | None:
        return IndexingUnavailableError(message, code=code) if code == "Off" else None

    with pytest.raises(IndexingUnavailableError), translated("GetStatistics", refine=refine):
        raise _client_error("Off")
    with pytest.raises(AwsError) as caught, translated("GetStatistics", refine=refine):
        raise _client_error("Other")
    assert not isinstance(caught.value, IndexingUnavailableError)


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (NoCredentialsError(), "set AWS credentials"),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), "check the network"),
    ],
)
def test_an_unsent_call_says_whether_credentials_or_the_network_are_missing(error, hint):
    with pytest.raises(AwsError, match=hint), translated("DescribeJobExecution"):
        raise error


@pytest.mark.parametrize("adapter", ["index", "executions"])
def test_every_adapter_asks_for_credentials_when_none_are_found(monkeypatch, adapter):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    iot = boto3.session.Session().client(
        "iot", region_name="us-east-1", config=Config(retries={"max_attempts": 1})
    )
    calls = {
        "index": lambda: FleetIndexAdapter(iot).count("thingName:*"),
        "executions": lambda: ExecutionReader(iot).status("job", "thing"),
    }
    with pytest.raises(AwsError, match="set AWS credentials"):
        calls[adapter]()


def test_pages_follow_next_tokens_translate_each_call_and_stop_at_the_bound(monkeypatch):
    from contextlib import nullcontext

    from orchestrator.aws import _errors

    asked: list[dict[str, object]] = []
    counted: list[None] = []

    def endless(**request: object) -> dict[str, object]:
        asked.append(request)
        return {"things": [len(asked)], "nextToken": f"t{len(asked)}"}

    monkeypatch.setattr(_errors, "MAX_PAGES", 3)
    got = list(_errors.pages(endless, nullcontext, counted=lambda: counted.append(None), q="x"))
    assert [page["things"] for page in got] == [[1], [2], [3]]  # bounded: never for ever
    assert asked == [{"q": "x"}, {"q": "x", "nextToken": "t1"}, {"q": "x", "nextToken": "t2"}]
    assert len(counted) == 3
    with pytest.raises(AwsError, match="ListThings failed"):
        list(_errors.pages(lambda **_: (_ for _ in ()).throw(_client_error("X")),
                           lambda: translated("ListThings")))  # fmt: skip
