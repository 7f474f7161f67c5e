"""The only part of the orchestrator that talks boto3: AWS IoT Jobs, DynamoDB and SNS.

Every AWS operation is called as `self._iot.<operation>(...)` or
`self._ddb.<operation>(...)`, so the IAM policy in `infra/aws` can be derived
from this package by reading its source. botocore's `ClientError` never leaves
this package: it is translated once, into `orchestrator.errors.AwsError`.
"""

from __future__ import annotations

from orchestrator.aws.iot import IotJobsAdapter, make_client

__all__ = ["IotJobsAdapter", "make_client"]
