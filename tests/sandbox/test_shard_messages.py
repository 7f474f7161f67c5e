"""The sharded fleet's messages: typed both ways, one decode check per direction."""

from __future__ import annotations

import pickle

import pytest

from infra.sandbox.fleet.shard_messages import (
    Answers,
    Batch,
    Close,
    Describe,
    Done,
    Err,
    Failed,
    Ok,
    Query,
    Ready,
    Result,
    Run,
    Snapshot,
    Start,
    Update,
    is_to_parent,
    is_to_worker,
)

TO_WORKER = [
    Start(1.0),
    Run(2.0, ["thing-1"]),
    Query("view", ("thing-1",)),
    Close(remove_files=True),
    Answers([Ok(Snapshot("j", "IN_PROGRESS", {}, 2, 1, None)), Err("VersionMismatch", "v")]),
]
TO_PARENT = [
    Batch([Describe("thing-1", "j", None), Update("thing-1", "j", {"status": "SUCCEEDED"})]),
    Done(3, 12.5, {"SUCCEEDED": 3}),
    Result({"peak_rss_mib": 50.0}),
    Ready(),
    Failed("Traceback ..."),
]


@pytest.mark.parametrize("message", TO_WORKER + TO_PARENT, ids=lambda m: type(m).__name__)
def test_a_message_survives_the_pipe_with_its_type_and_fields(message) -> None:
    again = pickle.loads(pickle.dumps(message))  # noqa: S301 - our own bytes, as over the pipe
    assert type(again) is type(message)
    assert again == message


@pytest.mark.parametrize("message", TO_WORKER, ids=lambda m: type(m).__name__)
def test_what_the_parent_sends_is_only_accepted_by_the_worker(message) -> None:
    assert is_to_worker(message)
    assert not is_to_parent(message)


@pytest.mark.parametrize("message", TO_PARENT, ids=lambda m: type(m).__name__)
def test_what_a_worker_sends_is_only_accepted_by_the_parent(message) -> None:
    assert is_to_parent(message)
    assert not is_to_worker(message)


@pytest.mark.parametrize(
    "message",
    [("done", 3, None, {}), ("batch", []), ["ready"], "failed", None, Describe("t", "j", None)],
)
def test_an_untyped_or_misplaced_message_is_refused_by_both_sides(message) -> None:
    # positional tuples were the old protocol; a request is only ever inside a Batch
    assert not is_to_parent(message)
    assert not is_to_worker(message)
