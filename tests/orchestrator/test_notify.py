"""Notifications: messages per decision, the webhook over real HTTP, SNS through moto."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
import structlog

from orchestrator.errors import UsageError
from orchestrator.model import CampaignState, CampaignStatus, Event, EventKind
from orchestrator.notify import (
    Announcer,
    CompositeNotifier,
    NotifyError,
    WebhookNotifier,
    messages_for,
    notifier_from_targets,
)

from .webhook_kit import webhook_server

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "s3cr3t-token"


def _state(status: CampaignStatus = CampaignStatus.HALTED) -> CampaignState:
    return CampaignState(name="ats-2026", status=status, waves=(), created_at=T0, updated_at=T0)


def _halt_events() -> list[Event]:
    """What the planner records for one halt: the wave's, then the campaign's."""
    return [
        Event(EventKind.GATE_LOST, "success rate 50% < 98%", "canary", at=T0),
        Event(EventKind.WAVE_HALTED, "success rate 50% < 98%", "canary", at=T0),
        Event(EventKind.CAMPAIGN_HALTED, "wave canary halted: success rate 50% < 98%", at=T0),
    ]


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def publish(self, subject: str, message: str) -> None:
        self.sent.append((subject, message))


class Broken:
    def __str__(self) -> str:
        return "broken"

    def publish(self, subject: str, message: str) -> None:
        raise NotifyError(f"down ({subject}, {len(message)})")


def test_one_halt_is_one_message_that_names_the_wave() -> None:
    (message,) = messages_for(_state(), _halt_events())
    assert message.subject == "ca-migrate ats-2026: campaign-halted"
    assert "wave canary halted: success rate 50% < 98%" in message.body
    assert "ca-migrate status ats-2026" in message.body


def test_a_halt_from_a_failed_action_names_each_halted_wave_once() -> None:
    events = [
        Event(EventKind.WAVE_HALTED, "CreateJob refused", "wave-1", at=T0),
        Event(EventKind.CAMPAIGN_HALTED, "CreateJob refused", at=T0),
    ]
    (message,) = messages_for(_state(), events)
    assert message.body.count("wave wave-1 halted: CreateJob refused") == 1


@pytest.mark.parametrize(
    ("kind", "announced"),
    [
        (EventKind.CAMPAIGN_COMPLETED, True),
        (EventKind.WAVE_AWAITING_APPROVAL, True),
        (EventKind.ROLLBACK_FINISHED, True),
        (EventKind.CAMPAIGN_ABORTED, True),
        (EventKind.GATE_PASSED, False),
        (EventKind.JOB_CREATED, False),
    ],
)
def test_which_decisions_are_announced(kind: EventKind, announced: bool) -> None:
    messages = messages_for(_state(CampaignStatus.RUNNING), [Event(kind, "why", "w", at=T0)])
    assert len(messages) == int(announced)


def test_the_same_step_handed_over_twice_is_announced_once() -> None:
    recorder = Recorder()
    announcer = Announcer(recorder)
    assert announcer.announce(_state(), _halt_events()) == 1
    assert announcer.announce(_state(), _halt_events()) == 0
    assert len(recorder.sent) == 1


def test_a_failing_notifier_is_logged_and_never_raises_to_the_step() -> None:
    with structlog.testing.capture_logs() as logs:
        assert Announcer(Broken()).announce(_state(), _halt_events()) == 0
    assert [entry["event"] for entry in logs] == ["notify-failed"]


def test_the_webhook_posts_slack_compatible_json_to_a_real_server() -> None:
    with webhook_server() as hook:
        WebhookNotifier(hook.url).publish("ca-migrate c: campaign-halted", "wave canary halted")
    (post,) = hook.posts
    assert post["path"].endswith(SECRET)
    assert set(post["json"]) == {"text"}
    assert "campaign-halted" in post["json"]["text"]
    assert "wave canary halted" in post["json"]["text"]
    assert hook.headers[0]["Content-Type"] == "application/json"


def test_a_refusing_webhook_is_an_error_that_never_shows_the_secret_path() -> None:
    with webhook_server() as hook, structlog.testing.capture_logs() as logs:
        hook.status = 403
        notifier = WebhookNotifier(hook.url)
        with pytest.raises(NotifyError, match="HTTP 403") as caught:
            notifier.publish("s", "m")
        Announcer(notifier).announce(_state(), _halt_events())
    assert SECRET not in str(caught.value)
    assert SECRET not in str(notifier)
    assert SECRET not in repr(notifier)
    assert logs
    assert all(SECRET not in json.dumps(entry, default=str) for entry in logs)


def test_a_webhook_that_never_answers_times_out() -> None:
    with webhook_server() as hook:
        hook.delay = 30.0
        started = time.monotonic()
        with pytest.raises(NotifyError, match="unreachable"):
            WebhookNotifier(hook.url, timeout=0.5).publish("s", "m")
        assert time.monotonic() - started < 10


def test_a_composite_still_delivers_to_the_others_when_one_fails() -> None:
    recorder = Recorder()
    with pytest.raises(NotifyError, match="broken"):
        CompositeNotifier([Broken(), recorder]).publish("s", "m")
    assert recorder.sent == [("s", "m")]


@pytest.mark.parametrize(
    "target",
    [
        "slack:https://hooks.slack.com/x",
        "sns:my-topic",
        "sns:arn:aws:sqs:us-east-1:123456789012:q",
        "webhook:",
        "webhook:ftp://example.com/x",
        "https://hooks.slack.com/x",
    ],
)
def test_a_target_that_is_not_one_says_what_to_write(target: str) -> None:
    with pytest.raises(UsageError, match="--notify") as caught:
        notifier_from_targets([target], sns=lambda _region: pytest.fail("no SNS client"))
    assert "hooks.slack.com/x" not in str(caught.value)


def test_sns_and_webhook_targets_get_the_same_message(monkeypatch: pytest.MonkeyPatch) -> None:
    moto = pytest.importorskip("moto")
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with moto.mock_aws(), webhook_server() as hook:
        sns = boto3.client("sns", region_name="eu-west-1")
        sqs = boto3.client("sqs", region_name="eu-west-1")
        topic = sns.create_topic(Name="ca-migrate")["TopicArn"]
        queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["QueueArn"])
        regions: list[str] = []

        def client(region: str):
            regions.append(region)
            return boto3.client("sns", region_name=region)

        notifier = notifier_from_targets([f"sns:{topic}", f"webhook:{hook.url}"], sns=client)
        assert notifier is not None
        Announcer(notifier).announce(_state(), _halt_events())
        received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert regions == ["eu-west-1"]
    (body,) = [json.loads(m["Body"]) for m in received]
    assert body["Subject"] == "ca-migrate ats-2026: campaign-halted"
    (post,) = hook.posts
    assert body["Message"] in post["json"]["text"]
