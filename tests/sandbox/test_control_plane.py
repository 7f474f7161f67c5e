"""Conformance of the `iot` control plane, driven through a real boto3 client over HTTP."""

from __future__ import annotations

import json

import pytest
from botocore.config import Config

from infra.sandbox import decisions as d

ARN = "arn:aws:iot:us-east-1:123456789012"
DOCUMENT = json.dumps({"operation": "rotate"})


def make_fleet(iot, things: int, group: str = "fleet") -> list[str]:
    iot.create_thing_group(thingGroupName=group)
    names = [f"{group}-{i:03d}" for i in range(things)]
    for name in names:
        iot.create_thing(thingName=name)
        iot.add_thing_to_thing_group(thingGroupName=group, thingName=name)
    return names


@pytest.mark.parametrize(
    ("endpoint_type", "host"),
    [
        (None, "a1sandbox2demo.iot.us-east-1.amazonaws.com"),
        ("iot:Data", "a1sandbox2demo.iot.us-east-1.amazonaws.com"),
        ("iot:Data-ATS", "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"),
        ("iot:Jobs", "a1sandbox2demo.jobs.iot.us-east-1.amazonaws.com"),
    ],
)
def test_describe_endpoint_answers_the_same_host_every_time(iot, endpoint_type, host):
    kwargs = {} if endpoint_type is None else {"endpointType": endpoint_type}
    first = iot.describe_endpoint(**kwargs)["endpointAddress"]
    second = iot.describe_endpoint(**kwargs)["endpointAddress"]
    assert first == second == host


def test_describe_endpoint_rejects_an_unknown_type(iot):
    with pytest.raises(iot.exceptions.InvalidRequestException, match="iot:Data-ATS"):
        iot.describe_endpoint(endpointType="iot:Nope")


def test_things_are_created_described_and_listed_in_pages(iot):
    created = iot.create_thing(thingName="pump-1", attributePayload={"attributes": {"site": "a"}})
    assert created["thingArn"] == f"{ARN}:thing/pump-1"
    for i in range(2, 6):
        iot.create_thing(thingName=f"pump-{i}")
    described = iot.describe_thing(thingName="pump-1")
    assert described["attributes"] == {"site": "a"}
    assert described["thingId"] == created["thingId"]
    names: list[str] = []
    token = None
    pages = 0
    while True:
        kwargs = {"maxResults": 2} | ({"nextToken": token} if token else {})
        page = iot.list_things(**kwargs)
        names += [t["thingName"] for t in page["things"]]
        pages += 1
        token = page.get("nextToken")
        if not token:
            break
    assert names == [f"pump-{i}" for i in range(1, 6)]
    assert pages == 3
    filtered = iot.list_things(attributeName="site", attributeValue="a")["things"]
    assert [t["thingName"] for t in filtered] == ["pump-1"]


def test_create_thing_again_is_idempotent_but_not_with_other_attributes(iot):
    first = iot.create_thing(thingName="same")
    assert iot.create_thing(thingName="same")["thingId"] == first["thingId"]
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException, match="different attributes"):
        iot.create_thing(thingName="same", attributePayload={"attributes": {"x": "1"}})


def test_describe_unknown_thing_is_resource_not_found(iot):
    with pytest.raises(iot.exceptions.ResourceNotFoundException, match="Thing ghost"):
        iot.describe_thing(thingName="ghost")


def test_thing_group_hierarchy_and_recursive_listing(iot):
    iot.create_thing_group(thingGroupName="all")
    iot.create_thing_group(thingGroupName="eu", parentGroupName="all")
    iot.create_thing_group(thingGroupName="eu-west", parentGroupName="eu")
    for name, group in (("a", "all"), ("b", "eu"), ("c", "eu-west")):
        iot.create_thing(thingName=name)
        iot.add_thing_to_thing_group(thingGroupName=group, thingName=name)
    direct = iot.list_things_in_thing_group(thingGroupName="all")["things"]
    deep = iot.list_things_in_thing_group(thingGroupName="all", recursive=True)["things"]
    assert direct == ["a"]
    assert deep == ["a", "b", "c"]
    meta = iot.describe_thing_group(thingGroupName="eu-west")["thingGroupMetadata"]
    assert meta["parentGroupName"] == "eu"
    assert [g["groupName"] for g in meta["rootToParentThingGroups"]] == ["all", "eu"]
    iot.remove_thing_from_thing_group(thingGroupName="eu-west", thingName="c")
    assert iot.list_things_in_thing_group(thingGroupName="all", recursive=True)["things"] == [
        "a",
        "b",
    ]


def test_thing_group_with_unknown_parent_is_not_found(iot):
    with pytest.raises(iot.exceptions.ResourceNotFoundException, match="nope"):
        iot.create_thing_group(thingGroupName="child", parentGroupName="nope")


def test_a_thing_belongs_to_at_most_ten_groups(iot):
    iot.create_thing(thingName="busy")
    for i in range(10):
        iot.create_thing_group(thingGroupName=f"g{i}")
        iot.add_thing_to_thing_group(thingGroupName=f"g{i}", thingName="busy")
    iot.create_thing_group(thingGroupName="g10")
    with pytest.raises(iot.exceptions.InvalidRequestException, match="10 thing groups"):
        iot.add_thing_to_thing_group(thingGroupName="g10", thingName="busy")


def test_add_thing_by_arn(iot):
    iot.create_thing(thingName="x")
    iot.create_thing_group(thingGroupName="gx")
    iot.add_thing_to_thing_group(thingGroupArn=f"{ARN}:thinggroup/gx", thingArn=f"{ARN}:thing/x")
    assert iot.list_things_in_thing_group(thingGroupName="gx")["things"] == ["x"]


def test_create_job_over_groups_expands_recursively_and_deduplicates(iot):
    make_fleet(iot, 3, "parent")
    iot.create_thing_group(thingGroupName="kid", parentGroupName="parent")
    iot.create_thing(thingName="kid-thing")
    iot.add_thing_to_thing_group(thingGroupName="kid", thingName="kid-thing")
    created = iot.create_job(
        jobId="job-1",
        targets=[f"{ARN}:thinggroup/parent", f"{ARN}:thing/parent-000"],
        document=DOCUMENT,
        description="rotate trust",
    )
    assert created == created | {
        "jobArn": f"{ARN}:job/job-1",
        "jobId": "job-1",
        "description": "rotate trust",
    }
    job = iot.describe_job(jobId="job-1")["job"]
    assert job["status"] == "IN_PROGRESS"
    assert job["targetSelection"] == "SNAPSHOT"
    assert job["jobProcessDetails"]["numberOfQueuedThings"] == 4
    assert "processingTargets" not in job["jobProcessDetails"]
    assert iot.get_job_document(jobId="job-1")["document"] == DOCUMENT


def test_create_job_twice_never_overwrites(iot):
    make_fleet(iot, 1)
    iot.create_job(jobId="once", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    with pytest.raises(
        iot.exceptions.ResourceAlreadyExistsException, match="Job once already exists"
    ):
        iot.create_job(jobId="once", targets=[f"{ARN}:thinggroup/fleet"], document="{}")
    assert iot.get_job_document(jobId="once")["document"] == DOCUMENT


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"jobId": "has space"}, "Member must satisfy regular expression pattern"),
        ({"jobId": "x" * 65}, "length less than or equal to 64"),
        ({"document": json.dumps({"pad": "x" * 32768})}, "length less than or equal to 32768"),
        ({"targets": [f"{ARN}:thing/t{i}" for i in range(101)]}, "at most 100 targets"),
        ({"targets": []}, "length greater than or equal to 1"),
        ({"document": "not json"}, "not valid JSON"),
        ({"document": "[1, 2]"}, "must be a JSON object"),
        ({"targetSelection": "SOMETIMES"}, "enum value set: \\[CONTINUOUS, SNAPSHOT\\]"),
        (
            {"jobExecutionsRolloutConfig": {"maximumPerMinute": 1001}},
            "maximumPerMinute must be 1-1000",
        ),
        (
            {
                "jobExecutionsRolloutConfig": {
                    "exponentialRate": {
                        "baseRatePerMinute": 5,
                        "incrementFactor": 1.15,
                        "rateIncreaseCriteria": {"numberOfNotifiedThings": 2},
                    }
                }
            },
            "one decimal place",
        ),
        (
            {
                "abortConfig": {
                    "criteriaList": [
                        {
                            "failureType": "FAILED",
                            "action": "CANCEL",
                            "thresholdPercentage": 100.5,
                            "minNumberOfExecutedThings": 1,
                        }
                    ]
                }
            },
            "less than or equal to 100",
        ),
        (
            {
                "abortConfig": {
                    "criteriaList": [
                        {
                            "failureType": "FAILED",
                            "action": "CANCEL",
                            "thresholdPercentage": 10.555,
                            "minNumberOfExecutedThings": 1,
                        }
                    ]
                }
            },
            "two decimal places",
        ),
        ({"timeoutConfig": {"inProgressTimeoutInMinutes": 10081}}, "1-10080"),
        (
            {
                "jobExecutionsRetryConfig": {
                    "criteriaList": [{"failureType": "TIMED_OUT", "numberOfRetries": 1}]
                }
            },
            "needs a timeoutConfig",
        ),
        (
            {
                "jobExecutionsRetryConfig": {
                    "criteriaList": [{"failureType": "FAILED", "numberOfRetries": 11}]
                }
            },
            "less than or equal to 10",
        ),
        ({"targets": ["arn:aws:iot:eu-west-1:123456789012:thing/t0"]}, "not in this partition"),
        ({"targets": ["arn:aws-cn:iot:us-east-1:123456789012:thing/t0"]}, "not in this partition"),
        ({"targets": ["not-an-arn"]}, "not a thing or thing group ARN"),
    ],
)
def test_create_job_validates_like_aws(sandbox, overrides, match):
    # Client-side validation off, so the sandbox's own checks are what answers.
    iot = sandbox.iot_client(config=Config(parameter_validation=False, retries={"max_attempts": 1}))
    iot.create_thing(thingName="t0")
    request = {"jobId": "j", "targets": [f"{ARN}:thing/t0"], "document": DOCUMENT} | overrides
    with pytest.raises(iot.exceptions.InvalidRequestException, match=match):
        iot.create_job(**request)


def test_create_job_on_unknown_target_is_not_found(iot):
    with pytest.raises(iot.exceptions.ResourceNotFoundException, match="Thing group missing"):
        iot.create_job(jobId="j", targets=[f"{ARN}:thinggroup/missing"], document=DOCUMENT)


def test_create_job_refuses_s3_document_sources(iot):
    iot.create_thing(thingName="t0")
    with pytest.raises(iot.exceptions.InvalidRequestException, match="pass document"):
        iot.create_job(
            jobId="j", targets=[f"{ARN}:thing/t0"], documentSource="https://s3.amazonaws.com/b/k"
        )


def test_unknown_job_is_resource_not_found(iot):
    with pytest.raises(iot.exceptions.ResourceNotFoundException, match="Job nope cannot be found"):
        iot.describe_job(jobId="nope")


def test_list_jobs_filters_by_status_selection_and_group(iot):
    make_fleet(iot, 1, "a")
    make_fleet(iot, 1, "b")
    iot.create_job(jobId="ja", targets=[f"{ARN}:thinggroup/a"], document=DOCUMENT)
    iot.create_job(
        jobId="jb",
        targets=[f"{ARN}:thinggroup/b"],
        document=DOCUMENT,
        targetSelection="CONTINUOUS",
    )
    iot.cancel_job(jobId="ja")
    assert [j["jobId"] for j in iot.list_jobs()["jobs"]] == ["ja", "jb"]
    assert [j["jobId"] for j in iot.list_jobs(status="CANCELED")["jobs"]] == ["ja"]
    assert [j["jobId"] for j in iot.list_jobs(targetSelection="CONTINUOUS")["jobs"]] == ["jb"]
    assert [j["jobId"] for j in iot.list_jobs(thingGroupName="a")["jobs"]] == ["ja"]


def test_list_job_executions_for_job_filters_and_paginates(iot, jobs_data):
    names = make_fleet(iot, 7)
    iot.create_job(jobId="pages", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    for name in names[:3]:
        jobs_data.update_job_execution(thingName=name, jobId="pages", status="SUCCEEDED")
    seen: list[str] = []
    token = None
    for _ in range(10):
        kwargs = {"jobId": "pages", "maxResults": 3} | ({"nextToken": token} if token else {})
        page = iot.list_job_executions_for_job(**kwargs)
        seen += [s["thingArn"].rsplit("/", 1)[1] for s in page["executionSummaries"]]
        token = page.get("nextToken")
        if token is None:
            break
    assert sorted(seen) == names
    succeeded = iot.list_job_executions_for_job(jobId="pages", status="SUCCEEDED")
    assert (
        sorted(s["thingArn"].rsplit("/", 1)[1] for s in succeeded["executionSummaries"])
        == (names[:3])
    )
    summary = succeeded["executionSummaries"][0]["jobExecutionSummary"]
    assert summary["status"] == "SUCCEEDED"
    assert summary["executionNumber"] == 1
    assert summary["retryAttempt"] == 0


def test_list_job_executions_rejects_foreign_tokens_and_page_sizes(sandbox, iot):
    make_fleet(iot, 1)
    iot.create_job(jobId="j", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    with pytest.raises(iot.exceptions.InvalidRequestException, match="nextToken"):
        iot.list_job_executions_for_job(jobId="j", nextToken="forged")
    loose = sandbox.iot_client(
        config=Config(parameter_validation=False, retries={"max_attempts": 1})
    )
    with pytest.raises(loose.exceptions.InvalidRequestException, match="less than or equal to 250"):
        loose.list_job_executions_for_job(jobId="j", maxResults=251)


def test_list_job_executions_for_thing_and_describe_execution(iot):
    make_fleet(iot, 1)
    iot.create_job(jobId="j1", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    iot.create_job(jobId="j2", targets=[f"{ARN}:thing/fleet-000"], document=DOCUMENT)
    listed = iot.list_job_executions_for_thing(thingName="fleet-000")["executionSummaries"]
    assert [s["jobId"] for s in listed] == ["j1", "j2"]
    only = iot.list_job_executions_for_thing(thingName="fleet-000", jobId="j2")
    assert [s["jobId"] for s in only["executionSummaries"]] == ["j2"]
    execution = iot.describe_job_execution(jobId="j1", thingName="fleet-000")["execution"]
    assert execution["status"] == "QUEUED"
    assert execution["versionNumber"] == 1
    assert execution["executionNumber"] == 1
    assert execution["thingArn"] == f"{ARN}:thing/fleet-000"
    assert execution["forceCanceled"] is False
    with pytest.raises(iot.exceptions.ResourceNotFoundException, match="cannot be found"):
        iot.describe_job_execution(jobId="j1", thingName="fleet-000", executionNumber=9)


def test_cancel_job_without_force_cancels_only_queued(clock, iot, jobs_data):
    names = make_fleet(iot, 3)
    iot.create_job(jobId="c", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    jobs_data.start_next_pending_job_execution(thingName=names[0])
    iot.cancel_job(jobId="c", reasonCode="OPERATOR", comment="halt")
    clock.advance(d.CANCEL_PROPAGATION_SECONDS)  # AWS cancels the executions asynchronously
    job = iot.describe_job(jobId="c")["job"]
    assert job["status"] == "CANCELED"
    assert job["forceCanceled"] is False
    assert job["reasonCode"] == "OPERATOR"
    assert job["comment"] == "halt"
    details = job["jobProcessDetails"]
    assert details["numberOfCanceledThings"] == 2
    assert details["numberOfInProgressThings"] == 1
    # The device can still finish what it started.
    jobs_data.update_job_execution(thingName=names[0], jobId="c", status="SUCCEEDED")
    assert iot.describe_job(jobId="c")["job"]["jobProcessDetails"]["numberOfSucceededThings"] == 1


def test_cancel_job_with_force_cancels_in_progress_and_locks_the_device_out(clock, iot, jobs_data):
    names = make_fleet(iot, 2)
    iot.create_job(jobId="f", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    jobs_data.start_next_pending_job_execution(thingName=names[0])
    iot.cancel_job(jobId="f", force=True)
    clock.advance(d.CANCEL_PROPAGATION_SECONDS)
    job = iot.describe_job(jobId="f")["job"]
    assert job["forceCanceled"] is True
    assert job["jobProcessDetails"]["numberOfCanceledThings"] == 2
    execution = iot.describe_job_execution(jobId="f", thingName=names[0])["execution"]
    assert execution["forceCanceled"] is True
    with pytest.raises(jobs_data.exceptions.InvalidStateTransitionException, match="CANCELED"):
        jobs_data.update_job_execution(thingName=names[0], jobId="f", status="SUCCEEDED")


def test_cancel_completed_job_is_invalid_request(iot, jobs_data):
    make_fleet(iot, 1)
    iot.create_job(jobId="done", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    jobs_data.update_job_execution(thingName="fleet-000", jobId="done", status="SUCCEEDED")
    with pytest.raises(iot.exceptions.InvalidRequestException, match="COMPLETED"):
        iot.cancel_job(jobId="done")


def test_cancel_job_execution_rules(iot, jobs_data):
    names = make_fleet(iot, 2)
    iot.create_job(jobId="x", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    jobs_data.start_next_pending_job_execution(thingName=names[0])
    with pytest.raises(iot.exceptions.InvalidStateTransitionException, match="force=True"):
        iot.cancel_job_execution(jobId="x", thingName=names[0])
    with pytest.raises(iot.exceptions.VersionConflictException, match="expectedVersion 7"):
        iot.cancel_job_execution(jobId="x", thingName=names[1], expectedVersion=7)
    iot.cancel_job_execution(jobId="x", thingName=names[1], expectedVersion=1)
    iot.cancel_job_execution(jobId="x", thingName=names[0], force=True)
    statuses = {
        s["thingArn"].rsplit("/", 1)[1]: s["jobExecutionSummary"]["status"]
        for s in iot.list_job_executions_for_job(jobId="x")["executionSummaries"]
    }
    assert statuses == {names[0]: "CANCELED", names[1]: "CANCELED"}
    with pytest.raises(iot.exceptions.InvalidStateTransitionException, match="terminal"):
        iot.cancel_job_execution(jobId="x", thingName=names[1])
    # Every execution terminal: the snapshot job is complete.
    assert iot.describe_job(jobId="x")["job"]["status"] == "COMPLETED"


def test_delete_job_needs_a_finished_job_unless_forced(clock, iot, jobs_data):
    make_fleet(iot, 1)
    iot.create_job(jobId="d", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    with pytest.raises(iot.exceptions.InvalidStateTransitionException, match="force=True"):
        iot.delete_job(jobId="d")
    iot.delete_job(jobId="d", force=True)
    clock.advance(d.DELETION_SECONDS)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_job(jobId="d")
    assert jobs_data.get_pending_job_executions(thingName="fleet-000")["queuedJobs"] == []
    iot.create_job(jobId="d2", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    iot.cancel_job(jobId="d2")
    iot.delete_job(jobId="d2")
    clock.advance(d.DELETION_SECONDS)
    assert iot.list_jobs()["jobs"] == []


def test_snapshot_job_completes_when_every_execution_is_terminal(clock, iot, jobs_data):
    names = make_fleet(iot, 3)
    iot.create_job(jobId="s", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    for name, status in zip(names, ("SUCCEEDED", "FAILED", "REJECTED"), strict=True):
        assert iot.describe_job(jobId="s")["job"]["status"] == "IN_PROGRESS"
        clock.advance(5)
        jobs_data.update_job_execution(thingName=name, jobId="s", status=status)
    job = iot.describe_job(jobId="s")["job"]
    assert job["status"] == "COMPLETED"
    assert job["completedAt"].timestamp() == clock.now().timestamp()
    details = job["jobProcessDetails"]
    assert (
        details["numberOfSucceededThings"],
        details["numberOfFailedThings"],
        details["numberOfRejectedThings"],
    ) == (1, 1, 1)


def test_continuous_job_gets_executions_for_things_added_later(iot, jobs_data):
    make_fleet(iot, 1)
    iot.create_job(
        jobId="cont",
        targets=[f"{ARN}:thinggroup/fleet"],
        document=DOCUMENT,
        targetSelection="CONTINUOUS",
    )
    jobs_data.update_job_execution(thingName="fleet-000", jobId="cont", status="SUCCEEDED")
    assert iot.describe_job(jobId="cont")["job"]["status"] == "IN_PROGRESS"
    iot.create_thing(thingName="late")
    iot.add_thing_to_thing_group(thingGroupName="fleet", thingName="late")
    pending = jobs_data.get_pending_job_executions(thingName="late")
    assert [j["jobId"] for j in pending["queuedJobs"]] == ["cont"]
    iot.remove_thing_from_thing_group(thingGroupName="fleet", thingName="late")
    execution = iot.describe_job_execution(jobId="cont", thingName="late")["execution"]
    assert execution["status"] == "REMOVED"
    details = iot.describe_job(jobId="cont")["job"]["jobProcessDetails"]
    assert details["numberOfRemovedThings"] == 1
    assert details["numberOfSucceededThings"] == 1


def test_snapshot_job_ignores_things_added_later(iot, jobs_data):
    make_fleet(iot, 1)
    iot.create_job(jobId="snap", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    iot.create_thing(thingName="late")
    iot.add_thing_to_thing_group(thingGroupName="fleet", thingName="late")
    assert jobs_data.get_pending_job_executions(thingName="late")["queuedJobs"] == []


def test_unknown_route_is_a_clear_error(http_call):
    status, headers, body = http_call("GET", "/nothing-here")
    assert status == 404
    assert headers["x-amzn-ErrorType"] == "UnknownOperationException"
    assert "does not implement GET /nothing-here" in body["message"]


def test_delete_thing_removes_its_pending_executions(sandbox, iot, jobs_data):
    make_fleet(iot, 2)
    iot.create_job(jobId="del", targets=[f"{ARN}:thinggroup/fleet"], document=DOCUMENT)
    iot.delete_thing(thingName="fleet-000")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName="fleet-000")
    assert iot.list_things_in_thing_group(thingGroupName="fleet")["things"] == ["fleet-001"]
    details = iot.describe_job(jobId="del")["job"]["jobProcessDetails"]
    assert details["numberOfQueuedThings"] == 1
    assert details["numberOfRemovedThings"] == 1
    assert sandbox.engine.counts("del") == sandbox.engine.recount("del")
    with pytest.raises(jobs_data.exceptions.ResourceNotFoundException):
        jobs_data.get_pending_job_executions(thingName="fleet-000")


def test_delete_thing_checks_the_expected_version(iot):
    iot.create_thing(thingName="v")
    with pytest.raises(iot.exceptions.VersionConflictException, match="expectedVersion 5"):
        iot.delete_thing(thingName="v", expectedVersion=5)
    iot.delete_thing(thingName="v", expectedVersion=1)


def test_describe_job_echoes_its_configuration(iot):
    iot.create_thing(thingName="cfg")
    config = {
        "jobExecutionsRolloutConfig": {"maximumPerMinute": 50},
        "abortConfig": {
            "criteriaList": [
                {
                    "failureType": "ALL",
                    "action": "CANCEL",
                    "thresholdPercentage": 12.5,
                    "minNumberOfExecutedThings": 3,
                }
            ]
        },
        "timeoutConfig": {"inProgressTimeoutInMinutes": 15},
        "jobExecutionsRetryConfig": {
            "criteriaList": [{"failureType": "FAILED", "numberOfRetries": 2}]
        },
    }
    iot.create_job(jobId="cfg", targets=[f"{ARN}:thing/cfg"], document=DOCUMENT, **config)
    job = iot.describe_job(jobId="cfg")["job"]
    assert {key: job[key] for key in config} == config


def test_cancel_job_execution_stores_the_given_status_details(iot):
    iot.create_thing(thingName="sd")
    iot.create_job(jobId="sd", targets=[f"{ARN}:thing/sd"], document=DOCUMENT)
    iot.cancel_job_execution(jobId="sd", thingName="sd", statusDetails={"reason": "operator"})
    execution = iot.describe_job_execution(jobId="sd", thingName="sd")["execution"]
    assert execution["statusDetails"]["detailsMap"] == {"reason": "operator"}
    assert execution["status"] == "CANCELED"
    assert execution["forceCanceled"] is False


@pytest.mark.parametrize(
    ("region", "ats_host", "partition"),
    [
        ("eu-west-1", "a1sandbox2demo-ats.iot.eu-west-1.amazonaws.com", "aws"),
        ("cn-north-1", "a1sandbox2demo-ats.iot.cn-north-1.amazonaws.com.cn", "aws-cn"),
    ],
)
def test_other_regions_answer_their_own_hosts_and_arns(region, ats_host, partition):
    from infra.sandbox.runtime import Sandbox

    with Sandbox(mqtt=False, region=region) as regional:
        iot = regional.iot_client()
        assert iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"] == ats_host
        arn = iot.create_thing(thingName="r")["thingArn"]
        assert arn == f"arn:{partition}:iot:{region}:123456789012:thing/r"
        iot.create_job(jobId="j", targets=[arn], document=DOCUMENT)
        assert iot.describe_job(jobId="j")["job"]["jobArn"] == (
            f"arn:{partition}:iot:{region}:123456789012:job/j"
        )


def test_continuous_job_covers_child_groups_and_keeps_things_still_targeted(iot, jobs_data):
    iot.create_thing_group(thingGroupName="top")
    iot.create_thing_group(thingGroupName="leaf", parentGroupName="top")
    iot.create_thing_group(thingGroupName="other")
    iot.create_job(
        jobId="tree",
        targets=[f"{ARN}:thinggroup/top", f"{ARN}:thinggroup/other"],
        document=DOCUMENT,
        targetSelection="CONTINUOUS",
    )
    iot.create_thing(thingName="kid")
    iot.add_thing_to_thing_group(thingGroupName="leaf", thingName="kid")
    iot.add_thing_to_thing_group(thingGroupName="other", thingName="kid")
    assert [
        j["jobId"] for j in jobs_data.get_pending_job_executions(thingName="kid")["queuedJobs"]
    ] == ["tree"]
    iot.remove_thing_from_thing_group(thingGroupName="leaf", thingName="kid")
    assert (
        iot.describe_job_execution(jobId="tree", thingName="kid")["execution"]["status"] == "QUEUED"
    )
    iot.remove_thing_from_thing_group(thingGroupName="other", thingName="kid")
    assert (
        iot.describe_job_execution(jobId="tree", thingName="kid")["execution"]["status"]
        == "REMOVED"
    )
