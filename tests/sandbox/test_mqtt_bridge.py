"""The Jobs and shadow topic logic of the bridge, without a broker (fake engine, fixed clock)."""

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.sandbox import render
from infra.sandbox.dataplane import DataPlaneError, ExecutionSnapshot
from infra.sandbox.mqtt._jobs import JobsTopics, NotifyTracker, Outgoing, parse_jobs_topic
from infra.sandbox.mqtt._shadow import ShadowStore
from infra.sandbox.mqtt.testing import FakeEngine

NOW = 1_900_000_000
T = "$aws/things/thing-1/jobs"


def now() -> int:
    return NOW


@pytest.fixture
def engine() -> FakeEngine:
    engine = FakeEngine()
    engine.queue("thing-1", "job-a", {"operation": "migrate"})
    engine.queue("thing-1", "job-b", {"operation": "prune"})
    return engine


@pytest.fixture
def topics(engine: FakeEngine) -> JobsTopics:
    return JobsTopics(engine, now)


def ask(topics: JobsTopics, topic: str, body: Any, via: str = "ats") -> Outgoing:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    (answer,) = topics.handle(topic, payload, via=via)
    return answer


def test_get_lists_pending_summaries_and_echoes_the_token(topics):
    answer = ask(topics, f"{T}/get", {"clientToken": "c-1"})
    assert answer.topic == f"{T}/get/accepted"
    assert answer.payload["clientToken"] == "c-1"
    assert answer.payload["timestamp"] == NOW
    assert answer.payload["inProgressJobs"] == []
    queued = answer.payload["queuedJobs"]
    assert [j["jobId"] for j in queued] == ["job-a", "job-b"]
    assert set(queued[0]) == {
        "jobId",
        "queuedAt",
        "lastUpdatedAt",
        "versionNumber",
        "executionNumber",
    }


def test_start_next_returns_the_execution_with_its_document_as_an_object(topics, engine):
    answer = ask(topics, f"{T}/start-next", {"clientToken": "s", "statusDetails": {"step": "1"}})
    execution = answer.payload["execution"]
    assert execution["jobId"] == "job-a"
    assert execution["status"] == "IN_PROGRESS"
    assert execution["jobDocument"] == {"operation": "migrate"}
    assert execution["statusDetails"] == {"step": "1"}
    for key in ("queuedAt", "startedAt", "lastUpdatedAt"):
        assert isinstance(execution[key], int)
    assert engine.vias[-1] == ("thing-1", "job-a", "IN_PROGRESS", "ats")


def test_start_next_with_nothing_pending_has_no_execution(topics):
    empty = ask(topics, "$aws/things/idle/jobs/start-next", {"clientToken": "x"})
    assert empty.topic == "$aws/things/idle/jobs/start-next/accepted"
    assert empty.payload == {"timestamp": NOW, "clientToken": "x"}


def test_describe_next_and_without_document(topics):
    nxt = ask(topics, f"{T}/$next/get", {})
    assert nxt.payload["execution"]["jobId"] == "job-a"
    bare = ask(topics, f"{T}/job-b/get", {"includeJobDocument": False})
    assert "jobDocument" not in bare.payload["execution"]
    assert "clientToken" not in bare.payload


# The MQTT execution object: what AWS sends (decisions.MQTT_EXECUTION_FIELDS): never
# thingName (the SDK sample's captured start-next and notify-next: `thing_name=None`),
# never approximateSecondsBeforeTimedOut, statusDetails only when there are any.
MQTT_BASE = {"jobId", "status", "queuedAt", "lastUpdatedAt", "versionNumber", "executionNumber"}


def test_start_next_and_describe_send_only_the_fields_aws_sends_over_mqtt(topics):
    started = ask(topics, f"{T}/start-next", {"statusDetails": {"step": "1"}})
    assert set(started.payload["execution"]) == MQTT_BASE | {
        "startedAt",
        "statusDetails",
        "jobDocument",
    }
    nxt = ask(topics, f"{T}/$next/get", {})
    assert set(nxt.payload["execution"]) == MQTT_BASE | {
        "startedAt",
        "statusDetails",
        "jobDocument",
    }
    queued = ask(topics, f"{T}/job-b/get", {})
    assert set(queued.payload["execution"]) == MQTT_BASE | {"jobDocument"}
    bare = ask(topics, f"{T}/job-b/get", {"includeJobDocument": False})
    assert set(bare.payload["execution"]) == MQTT_BASE


def test_notify_next_sends_only_the_fields_aws_sends_over_mqtt(engine):
    (_, head) = NotifyTracker(now).changes("thing-1", engine.get_pending("thing-1"))
    assert head.topic == f"{T}/notify-next"
    assert set(head.payload) == {"timestamp", "execution"}
    assert set(head.payload["execution"]) == MQTT_BASE | {"jobDocument"}


def test_an_execution_with_a_timer_and_a_thing_shows_neither_over_mqtt_but_both_over_https():
    snapshot = ExecutionSnapshot(
        job_id="j",
        thing_name="thing-1",
        status="IN_PROGRESS",
        status_details={},
        queued_at=NOW - 9,
        started_at=NOW - 5,
        last_updated_at=NOW - 5,
        version_number=2,
        execution_number=1,
        approximate_seconds_before_timed_out=295,
        job_document='{"a": 1}',
    )
    over_mqtt = render.mqtt_execution(snapshot, include_document=True)
    assert set(over_mqtt) == MQTT_BASE | {"startedAt", "jobDocument"}
    assert over_mqtt["jobDocument"] == {"a": 1}
    over_https = render.data_execution(snapshot, include_document=True)
    assert over_https["thingName"] == "thing-1"
    assert over_https["approximateSecondsBeforeTimedOut"] == 295
    assert over_https["statusDetails"] == {}
    assert over_https["jobDocument"] == '{"a": 1}'


def test_update_includes_state_and_document_only_when_asked(topics, engine):
    plain = ask(topics, f"{T}/job-a/update", {"status": "IN_PROGRESS", "clientToken": "u"})
    assert plain.topic == f"{T}/job-a/update/accepted"
    assert plain.payload == {"timestamp": NOW, "clientToken": "u"}
    full = ask(
        topics,
        f"{T}/job-a/update",
        {
            "status": "SUCCEEDED",
            "expectedVersion": 2,
            "includeJobExecutionState": True,
            "includeJobDocument": True,
        },
        via="legacy",
    )
    assert full.payload["executionState"] == {"status": "SUCCEEDED", "versionNumber": 3}
    assert full.payload["jobDocument"] == {"operation": "migrate"}
    assert engine.vias[-1] == ("thing-1", "job-a", "SUCCEEDED", "legacy")


@pytest.mark.parametrize(
    ("topic", "payload", "code", "has_state"),
    [
        (f"{T}/get", b"{not json", "InvalidJson", False),
        (f"{T}/get", b"[1, 2]", "InvalidRequest", False),
        (f"{T}/job-a/update", b'{"status": "DONE"}', "InvalidRequest", False),
        (f"{T}/job-a/update", b'{"status": "QUEUED"}', "InvalidRequest", False),
        (
            f"{T}/job-a/update",
            b'{"status": "FAILED", "expectedVersion": "1"}',
            "InvalidRequest",
            False,
        ),
        (
            f"{T}/job-a/update",
            b'{"status": "FAILED", "statusDetails": {"a": 1}}',
            "InvalidRequest",
            False,
        ),
        (f"{T}/$next/update", b'{"status": "SUCCEEDED"}', "InvalidRequest", False),
        (f"{T}/job-z/update", b'{"status": "SUCCEEDED"}', "ResourceNotFound", False),
        (f"{T}/job-z/get", b"{}", "ResourceNotFound", False),
        (
            f"{T}/job-a/update",
            b'{"status": "SUCCEEDED", "expectedVersion": 9}',
            "VersionMismatch",
            True,
        ),
        (f"{T}/bogus", b"{}", "InvalidTopic", False),
        (f"{T}/job-a/delete", b"{}", "InvalidTopic", False),
        (f"{T}/a/b/c", b"{}", "InvalidTopic", False),
    ],
)
def test_rejections_name_the_code_and_echo_the_token(topics, topic, payload, code, has_state):
    body = payload
    if payload.startswith(b"{") and payload != b"{not json":
        body = json.dumps({**json.loads(payload), "clientToken": "tok"}).encode()
    (answer,) = topics.handle(topic, body, via="ats")
    assert answer.topic == f"{topic}/rejected"
    assert answer.payload["code"] == code
    assert answer.payload["timestamp"] == NOW
    assert answer.payload["message"]
    if body is not payload:
        assert answer.payload["clientToken"] == "tok"
    assert ("executionState" in answer.payload) is has_state


def test_terminal_execution_rejects_with_its_state(topics):
    ask(topics, f"{T}/job-a/update", {"status": "SUCCEEDED"})
    again = ask(topics, f"{T}/job-a/update", {"status": "FAILED", "clientToken": "late"})
    assert again.topic.endswith("/rejected")
    assert again.payload["code"] == "InvalidStateTransition"
    assert again.payload["executionState"]["status"] == "SUCCEEDED"
    assert again.payload["clientToken"] == "late"


def test_overlong_client_token_is_an_invalid_request_not_echoed(topics):
    answer = ask(topics, f"{T}/get", {"clientToken": "x" * 65})
    assert answer.payload["code"] == "InvalidRequest"
    assert "clientToken" not in answer.payload


@pytest.mark.parametrize(
    "suffix", ["get/accepted", "get/rejected", "notify", "notify-next", "job-a/update/accepted"]
)
def test_answer_and_event_topics_are_never_answered(topics, suffix):
    assert topics.handle(f"{T}/{suffix}", b"{}", via="ats") == []


def test_engine_failure_becomes_internal_error(engine):
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("boom")

    engine.get_pending = broken  # type: ignore[method-assign]
    (answer,) = JobsTopics(engine, now).handle(f"{T}/get", b'{"clientToken":"t"}', via="ats")
    assert answer.payload["code"] == "InternalError"
    assert answer.payload["clientToken"] == "t"


def test_parse_jobs_topic_outside_jobs_is_invalid():
    with pytest.raises(DataPlaneError) as caught:
        parse_jobs_topic("$aws/things/x/shadow/get")
    assert caught.value.code == "InvalidTopic"


def by_topic(events: list[Outgoing]) -> dict[str, dict[str, Any]]:
    return {e.topic.rsplit("/", 1)[1]: e.payload for e in events}


def test_notify_and_notify_next_follow_list_and_head_changes():
    engine = FakeEngine()
    tracker = NotifyTracker(now)
    assert tracker.changes("thing-1", engine.get_pending("thing-1")) == []

    engine.queue("thing-1", "job-a", {"n": 1})
    first = by_topic(tracker.changes("thing-1", engine.get_pending("thing-1")))
    assert set(first) == {"notify", "notify-next"}
    assert [j["jobId"] for j in first["notify"]["jobs"]["QUEUED"]] == ["job-a"]
    assert "IN_PROGRESS" not in first["notify"]["jobs"]
    assert first["notify-next"]["execution"]["jobDocument"] == {"n": 1}

    assert tracker.changes("thing-1", engine.get_pending("thing-1")) == []  # spurious call

    engine.queue("thing-1", "job-b", {"n": 2})
    second = by_topic(tracker.changes("thing-1", engine.get_pending("thing-1")))
    assert set(second) == {"notify"}  # head unchanged
    engine.start_next("thing-1", status_details=None, step_timeout_minutes=None, via="ats")
    started = by_topic(tracker.changes("thing-1", engine.get_pending("thing-1")))
    assert set(started) == {"notify"}
    assert [j["jobId"] for j in started["notify"]["jobs"]["IN_PROGRESS"]] == ["job-a"]
    assert [j["jobId"] for j in started["notify"]["jobs"]["QUEUED"]] == ["job-b"]

    for job in ("job-a", "job-b"):
        engine.update_execution(
            "thing-1",
            job,
            status="SUCCEEDED",
            status_details=None,
            expected_version=None,
            execution_number=None,
            step_timeout_minutes=None,
            via="ats",
        )
        events = by_topic(tracker.changes("thing-1", engine.get_pending("thing-1")))
        assert "notify-next" in events
    assert events["notify"] == {"timestamp": NOW, "jobs": {}}
    assert events["notify-next"] == {"timestamp": NOW}
    assert tracker._sent == {}


def test_notify_lists_at_most_ten_executions():
    engine = FakeEngine()
    for i in range(12):
        engine.queue("busy", f"job-{i:02d}", {})
    events = by_topic(NotifyTracker(now).changes("busy", engine.get_pending("busy")))
    assert len(events["notify"]["jobs"]["QUEUED"]) == 10
    assert events["notify"]["jobs"]["QUEUED"][0]["jobId"] == "job-00"


S = "$aws/things/thing-1/shadow/name/ca-migration"


def shadow_ask(store: ShadowStore, op: str, body: Any) -> list[Outgoing]:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return store.handle(f"{S}/{op}", payload)


def test_shadow_update_merges_reported_state_and_counts_versions():
    store = ShadowStore(now)
    accepted, documents = shadow_ask(
        store, "update", {"state": {"reported": {"trust": {"roots": ["ca-1"]}, "step": "probe"}}}
    )
    assert accepted.topic == f"{S}/update/accepted"
    assert accepted.payload["version"] == 1
    assert accepted.payload["metadata"]["reported"]["trust"]["roots"] == {"timestamp": NOW}
    assert documents.topic == f"{S}/update/documents"
    assert documents.payload["previous"] is None
    (again, _) = shadow_ask(
        store,
        "update",
        {
            "state": {"reported": {"step": None, "endpoint": "ats"}},
            "clientToken": "k",
            "version": 1,
        },
    )
    assert again.payload["version"] == 2
    assert again.payload["clientToken"] == "k"
    doc = store.get("thing-1", "ca-migration")
    assert doc is not None
    assert doc["state"]["reported"] == {"trust": {"roots": ["ca-1"]}, "endpoint": "ats"}
    assert doc["version"] == 2
    (got,) = shadow_ask(store, "get", {"clientToken": "g"})
    assert got.topic == f"{S}/get/accepted"
    assert got.payload["state"] == doc["state"]
    assert got.payload["clientToken"] == "g"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{oops", 400),
        ({"nostate": 1}, 400),
        ({"state": {"elsewhere": {}}}, 400),
        ({"state": {"reported": 5}}, 400),
        ({"state": {"reported": {"a": 1}}, "version": 7}, 409),
    ],
)
def test_shadow_update_rejections(body, code):
    (answer,) = shadow_ask(ShadowStore(now), "update", body)
    assert answer.topic == f"{S}/update/rejected"
    assert answer.payload["code"] == code


def test_shadow_get_and_delete_of_a_missing_shadow_are_404():
    store = ShadowStore(now)
    for op in ("get", "delete"):
        (answer,) = shadow_ask(store, op, {})
        assert answer.topic == f"{S}/{op}/rejected"
        assert answer.payload["code"] == 404
    shadow_ask(store, "update", {"state": {"reported": {"a": 1}}})
    (deleted,) = shadow_ask(store, "delete", {})
    assert deleted.payload["version"] == 1
    assert store.get("thing-1", "ca-migration") is None


def test_shadow_ignores_its_own_answer_topics():
    assert ShadowStore(now).handle(f"{S}/update/accepted", b"{}") == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["queue", "start", "finish", "spurious"]), st.integers(0, 5)),
        max_size=25,
    )
)
def test_a_device_following_events_always_sees_the_true_pending_list_and_head(steps):
    engine = FakeEngine()
    tracker = NotifyTracker(now)
    seen_list: list[tuple[str, str]] = []
    seen_head: str | None = None
    counter = 0
    for action, pick in steps:
        pending = engine.get_pending("t")
        everything = [*pending.in_progress, *pending.queued]
        if action == "queue":
            counter += 1
            engine.queue("t", f"job-{counter:03d}", {})
        elif action == "start":
            engine.start_next("t", status_details=None, step_timeout_minutes=None, via="ats")
        elif action == "finish" and everything:
            target = everything[pick % len(everything)]
            engine.update_execution(
                "t",
                target.job_id,
                status="SUCCEEDED",
                status_details=None,
                expected_version=None,
                execution_number=None,
                step_timeout_minutes=None,
                via="ats",
            )
        events = by_topic(tracker.changes("t", engine.get_pending("t")))
        if "notify" in events:
            jobs = events["notify"]["jobs"]
            seen_list = [
                (status, j["jobId"])
                for status in ("IN_PROGRESS", "QUEUED")
                for j in jobs.get(status, [])
            ]
        if "notify-next" in events:
            execution = events["notify-next"].get("execution")
            seen_head = None if execution is None else execution["jobId"]
        truth = engine.get_pending("t")
        expected = [(s.status, s.job_id) for s in (*truth.in_progress, *truth.queued)][:10]
        assert seen_list == expected
        assert seen_head == (truth.next.job_id if truth.next else None)
        assert tracker.changes("t", truth) == []
