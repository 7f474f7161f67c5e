"""The AWS IoT Device SDK v2 jobs sample's calls, without its prompt: one job, created and done.

`samples/service_clients/jobs.py` of aws-iot-device-sdk-python-v2 (v1.25.0 and
later) is interactive. This script makes the same calls in the order its
walkthrough types them, so a test can run them where no SDK checkout is at hand:

- `mqtt5_client_builder.mtls_from_path(endpoint, port=8883, cert, key,
  clean_session=True, keep_alive_secs=1200)`: no CA file (the system trust
  store) and no client id (empty: the server assigns one), as the sample;
- `IotJobsClientV2` with the sample's request-response options, and its two
  streams (JobExecutionsChanged, NextJobExecutionChanged) opened;
- boto3 `client("iot", region)` (endpoint and credentials from the
  environment): DescribeThing, then CreateJob targeting the thing's ARN;
- `start_next_pending_job_execution`, then `update_job_execution(SUCCEEDED)`.

Run: `python sdk_jobs_sample.py --endpoint H --cert C --key K --thing T --region R
[--port P]`; `--port` exists only for machines where 8883 is taken (the sample
has none). Prints one JSON line per step; exits non-zero when a step fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from concurrent.futures import Future
from typing import Any

import boto3
from awscrt import mqtt5, mqtt_request_response
from awsiot import ServiceStreamOptions, iotjobs, mqtt5_client_builder

_WAIT = 60.0
_OUT = threading.Lock()


def _say(step: str, **fields: Any) -> None:
    line = json.dumps({"step": step, **fields}, default=str) + "\n"
    with _OUT:  # events arrive on the SDK's threads: one whole line at a time
        sys.stdout.write(line)
        sys.stdout.flush()


def main(argv: list[str]) -> int:  # noqa: PLR0915 - the walkthrough, one step after another
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("--endpoint", "--cert", "--key", "--thing", "--region"):
        parser.add_argument(name, required=True)
    parser.add_argument("--port", type=int, default=8883)
    parser.add_argument("--job-id", default="stock-sample-job")
    args = parser.parse_args(argv)

    connected: Future[bool] = Future()
    stopped: Future[bool] = Future()

    def on_failure(event: mqtt5.LifecycleConnectFailureData) -> None:
        if not connected.done():
            connected.set_exception(RuntimeError(f"failed to connect: {event.exception}"))

    client = mqtt5_client_builder.mtls_from_path(
        endpoint=args.endpoint,
        port=args.port,
        cert_filepath=args.cert,
        pri_key_filepath=args.key,
        clean_session=True,
        keep_alive_secs=1200,
        on_lifecycle_connection_success=lambda _e: connected.done() or connected.set_result(True),
        on_lifecycle_connection_failure=on_failure,
        on_lifecycle_stopped=lambda _e: stopped.set_result(True),
    )
    client.start()
    jobs = iotjobs.IotJobsClientV2(
        client,
        mqtt_request_response.ClientOptions(
            max_request_response_subscriptions=2,
            max_streaming_subscriptions=2,
            operation_timeout_in_seconds=30,
        ),
    )
    try:
        connected.result(timeout=_WAIT)
        _say("connected")
        queued = threading.Event()
        finished = threading.Event()
        # The sample's operator types create-job well after the streams are open; a script
        # waits for both subscriptions instead, or the first events could go unheard.
        subscribed = threading.Semaphore(0)

        def on_status(event: mqtt_request_response.SubscriptionStatusEvent) -> None:
            established = mqtt_request_response.SubscriptionStatusEventType.SUBSCRIPTION_ESTABLISHED
            if event.type == established:
                subscribed.release()

        def on_next(event: iotjobs.NextJobExecutionChangedEvent) -> None:
            if event.execution is not None and event.execution.job_id == args.job_id:
                queued.set()
            elif event.execution is None:
                finished.set()

        # Kept in names, as the sample does: a stream that is garbage collected closes.
        changed_stream = jobs.create_job_executions_changed_stream(
            iotjobs.JobExecutionsChangedSubscriptionRequest(thing_name=args.thing),
            ServiceStreamOptions(
                incoming_event_listener=lambda e: _say("changed", jobs=e.jobs),
                subscription_status_listener=on_status,
            ),
        )
        changed_stream.open()
        next_stream = jobs.create_next_job_execution_changed_stream(
            iotjobs.NextJobExecutionChangedSubscriptionRequest(thing_name=args.thing),
            ServiceStreamOptions(
                incoming_event_listener=on_next, subscription_status_listener=on_status
            ),
        )
        next_stream.open()
        if not (subscribed.acquire(timeout=_WAIT) and subscribed.acquire(timeout=_WAIT)):
            _say("error", message="the event streams were not subscribed")
            return 1

        iot = boto3.client("iot", args.region)
        thing_arn = iot.describe_thing(thingName=args.thing)["thingArn"]
        created = iot.create_job(
            jobId=args.job_id,
            document=json.dumps({"ToDo": "Reboot"}),
            targets=[thing_arn],
            targetSelection="SNAPSHOT",
        )
        _say("create-job", job_arn=created["jobArn"])
        if not queued.wait(_WAIT):
            _say("error", message="no NextJobExecutionChanged event for the new job")
            return 1
        started = jobs.start_next_pending_job_execution(
            iotjobs.StartNextPendingJobExecutionRequest(thing_name=args.thing)
        ).result(_WAIT)
        execution = started.execution
        _say(
            "start-next",
            job_id=execution.job_id if execution else None,
            status=execution.status if execution else None,
            document=execution.job_document if execution else None,
        )
        jobs.update_job_execution(
            iotjobs.UpdateJobExecutionRequest(
                thing_name=args.thing, job_id=args.job_id, status="SUCCEEDED"
            )
        ).result(_WAIT)
        _say("update-job-execution", status="SUCCEEDED")
        if not finished.wait(_WAIT):
            _say("error", message="no NextJobExecutionChanged event after SUCCEEDED")
            return 1
        _say("done")
        return 0
    finally:
        client.stop()
        stopped.result(timeout=_WAIT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
