"""The SNS client that notifications publish with (`orchestrator.notify.SnsNotifier`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3

from orchestrator.aws.iot import RETRY_CONFIG

if TYPE_CHECKING:
    from orchestrator.notify import SnsPublisher

__all__ = ["make_sns_client"]


def make_sns_client(*, region: str, profile: str | None = None) -> SnsPublisher:
    """A boto3 "sns" client in the topic's region, with the IoT client's adaptive retries.

    boto3 honours `AWS_ENDPOINT_URL_SNS` (and `AWS_ENDPOINT_URL`), so it can be pointed
    at a local stand-in without an option of ours.
    """
    session = boto3.Session(profile_name=profile, region_name=region)
    client: SnsPublisher = session.client("sns", config=RETRY_CONFIG)
    return client
