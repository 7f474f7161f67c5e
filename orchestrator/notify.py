"""Notifications: where a campaign's halts, completions and approvals are announced.

A `Notifier` publishes one message (a subject and a body). `SnsNotifier` sends
it to an SNS topic (the unattended runner's notifications topic);
`WebhookNotifier` POSTs Slack-compatible JSON (`{"text": ...}`, which Slack,
Mattermost, Rocket.Chat and Microsoft Teams' workflows accept) to an incoming
webhook; `CompositeNotifier` fans one message out to several. `Announcer` turns
the events of reconcile steps into messages, once each: the runner and
`ca-migrate run --follow --notify ...` both use it.

Invariants:
- One decision, one message: a halt records `wave-halted` and `campaign-halted`
  in the same step; they are announced as one message that names the wave.
- An event is announced at most once per `Announcer` (keyed by campaign, kind,
  wave and time), however often a step's result is handed to it.
- A failed publish is logged and never undoes or stops a step. A composite
  still tries every target.
- A webhook URL is a credential (Slack's path is the secret): it is never
  logged, echoed or put in an error message; only its host is.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import structlog

from orchestrator.errors import UsageError
from orchestrator.model import CampaignState, Event, EventKind

if TYPE_CHECKING:
    from orchestrator.reconcile import StepResult

__all__ = [
    "NOTIFY_KINDS",
    "Announcer",
    "CompositeNotifier",
    "Message",
    "Notifier",
    "NotifyError",
    "SnsNotifier",
    "SnsPublisher",
    "WebhookNotifier",
    "announce_step",
    "cli_announcer",
    "messages_for",
    "notifier_from_targets",
]

log = structlog.get_logger(__name__)

NOTIFY_KINDS: Final = frozenset(
    {
        EventKind.CAMPAIGN_HALTED,
        EventKind.CAMPAIGN_COMPLETED,
        EventKind.CAMPAIGN_ABORTED,
        EventKind.ROLLBACK_FINISHED,
        EventKind.WAVE_HALTED,
        EventKind.WAVE_AWAITING_APPROVAL,
        EventKind.DRIFT_FOUND,
    }
)
_SUBJECT_LIMIT: Final = 99  # SNS subjects: printable ASCII, fewer than 100 characters
WEBHOOK_TIMEOUT_SECONDS: Final = 10.0
_WEBHOOK_SCHEMES: Final = ("https", "http")
_TOPIC_ARN: Final = re.compile(
    r"arn:aws[a-z-]*:sns:(?P<region>[a-z0-9-]+):\d{12}:[A-Za-z0-9_.-]{1,256}"
)


class NotifyError(Exception):
    """A message could not be delivered; the text names the target, never a secret."""


class Notifier(Protocol):
    """Where halts and completions are announced."""

    def publish(self, subject: str, message: str) -> None:
        """Announce one message; raising is allowed (the caller logs and carries on)."""
        ...


class SnsPublisher(Protocol):
    """The one SNS client method `SnsNotifier` uses."""

    def publish(self, *, TopicArn: str, Subject: str, Message: str) -> Any:  # noqa: N803
        """SNS Publish."""
        ...


class SnsNotifier:
    """`Notifier` over an SNS topic."""

    def __init__(self, sns: SnsPublisher, topic_arn: str) -> None:
        self._sns = sns
        self.topic_arn = topic_arn

    def __str__(self) -> str:
        return f"sns:{self.topic_arn}"

    def publish(self, subject: str, message: str) -> None:
        self._sns.publish(TopicArn=self.topic_arn, Subject=_ascii_subject(subject), Message=message)


def _ascii_subject(subject: str) -> str:
    printable = "".join(ch if " " <= ch <= "~" else "?" for ch in subject)
    return printable[:_SUBJECT_LIMIT]


class WebhookNotifier:
    """`Notifier` that POSTs `{"text": subject + body}` to an incoming webhook.

    The URL is held but never shown: `str()` and errors give its host only.
    """

    def __init__(self, url: str, *, timeout: float = WEBHOOK_TIMEOUT_SECONDS) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in _WEBHOOK_SCHEMES or not parts.hostname:
            raise UsageError(
                "--notify webhook:URL needs an http(s) URL with a host, "
                "e.g. webhook:https://hooks.slack.com/services/..."
            )
        self._url = url
        self.host = parts.hostname
        self.timeout = timeout

    def __str__(self) -> str:
        return f"webhook:{self.host}"

    __repr__ = __str__

    def publish(self, subject: str, message: str) -> None:
        body = json.dumps({"text": f"*{subject}*\n{message}"}).encode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self._url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "ca-migrate"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                response.read(4096)
        except urllib.error.HTTPError as exc:
            raise NotifyError(f"webhook at {self.host} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NotifyError(f"webhook at {self.host} unreachable: {reason}") from None


class CompositeNotifier:
    """Publishes each message to every target; one failing target does not stop the rest."""

    def __init__(self, targets: Sequence[Notifier]) -> None:
        self.targets = tuple(targets)

    def __str__(self) -> str:
        return ", ".join(str(t) for t in self.targets)

    def publish(self, subject: str, message: str) -> None:
        failed = []
        for target in self.targets:
            try:
                target.publish(subject, message)
            except Exception as exc:  # noqa: BLE001 - the others still get the message
                log.warning("notify-failed", target=str(target), error=str(exc))
                failed.append(str(target))
        if failed:
            raise NotifyError(f"not delivered to {', '.join(failed)}")


@dataclass(frozen=True, slots=True)
class Message:
    """One announcement: the events it covers, its subject and body."""

    key: tuple[str, ...]
    subject: str
    body: str


def _key(state: CampaignState, event: Event) -> tuple[str, ...]:
    at = event.at.isoformat() if event.at is not None else ""
    return (state.name, str(event.kind), event.wave or "", at)


def messages_for(state: CampaignState, events: Iterable[Event]) -> list[Message]:
    """The messages one step's events call for (pure): one per decision, never one per event.

    A `campaign-halted` takes in the `wave-halted` events of its step: the
    operator gets one message that says which wave halted and why.
    """
    notable = [e for e in events if e.kind in NOTIFY_KINDS]
    halted = any(e.kind is EventKind.CAMPAIGN_HALTED for e in notable)
    waves = [e for e in notable if e.kind is EventKind.WAVE_HALTED] if halted else []
    out = []
    for event in notable:
        if halted and event.kind is EventKind.WAVE_HALTED:
            continue
        wave = f" wave {event.wave}" if event.wave else ""
        lines = [
            f"Campaign {state.name} is {state.status.value}.",
            f"{event.kind}{wave}: {event.reason}",
        ]
        if event.kind is EventKind.CAMPAIGN_HALTED:
            halts = (f"wave {w.wave} halted: {w.reason}" for w in waves)
            lines += [line for line in halts if line != event.reason]
        lines += ["", f"Details: ca-migrate status {state.name}; ca-migrate events {state.name}"]
        out.append(
            Message(
                key=_key(state, event),
                subject=f"ca-migrate {state.name}{wave}: {event.kind}",
                body="\n".join(lines),
            )
        )
    return out


class Announcer:
    """Announces what reconcile steps decided, each decision once, through one `Notifier`."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self._sent: set[tuple[str, ...]] = set()

    def announce(self, state: CampaignState, events: Iterable[Event]) -> int:
        """Publish the messages for one step's events; returns how many were published."""
        published = 0
        for message in messages_for(state, events):
            if message.key in self._sent:
                continue
            self._sent.add(message.key)
            try:
                self.notifier.publish(message.subject, message.body)
            except Exception as exc:  # noqa: BLE001 - a lost notification must not undo the step
                log.warning(
                    "notify-failed", campaign=state.name, subject=message.subject, error=str(exc)
                )
                continue
            published += 1
        return published


def notifier_from_targets(
    targets: Sequence[str], *, sns: Callable[[str], SnsPublisher]
) -> Notifier | None:
    """The notifier for `--notify` values (`sns:ARN`, `webhook:URL`); None when none is given.

    `sns` makes the SNS client for a topic's region (the caller owns boto3).
    """
    built: list[Notifier] = []
    for target in targets:
        kind, _, value = target.partition(":")
        topic = _TOPIC_ARN.fullmatch(value) if kind == "sns" else None
        if topic is not None:
            built.append(SnsNotifier(sns(topic["region"]), value))
        elif kind == "webhook" and value:
            built.append(WebhookNotifier(value))
        else:
            shown = kind if kind in ("sns", "webhook") else f"{kind[:20]}"
            raise UsageError(
                f"--notify {shown}:... is not a target; use sns:arn:aws:sns:REGION:ACCOUNT:TOPIC "
                "or webhook:https://HOST/PATH (repeat --notify for several)"
            )
    if not built:
        return None
    return built[0] if len(built) == 1 else CompositeNotifier(built)


def cli_announcer(targets: Sequence[str], *, profile: str | None) -> Announcer | None:
    """The announcer for `ca-migrate run --notify ...` (None when no target is given).

    Bad targets fail here, before the first step, with what to write instead.
    """
    if not targets:
        return None

    def sns(region: str) -> SnsPublisher:
        from orchestrator.aws.sns import make_sns_client

        return make_sns_client(region=region, profile=profile)

    notifier = notifier_from_targets(targets, sns=sns)
    return None if notifier is None else Announcer(notifier)


def announce_step(announcer: Announcer | None, result: StepResult) -> None:
    """Announce what one reconcile step decided (nothing when no announcer is set)."""
    if announcer is not None:
        announcer.announce(result.state, result.events)
