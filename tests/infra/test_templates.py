"""Template properties beyond what cfn-lint checks: the runner's safety settings, wave groups."""

from __future__ import annotations

import re

from .cfn_test_helpers import resolve, template

THING_GROUP_NAME = re.compile(r"[a-zA-Z0-9:_-]{1,128}")


def test_runner_schedule_never_retries_a_tick():
    """A retried tick would only overlap the next one; the stored state makes ticks idempotent."""
    schedule = template("runner.yaml")["Resources"]["RunnerSchedule"]["Properties"]
    assert schedule["Target"]["RetryPolicy"]["MaximumRetryAttempts"] == 0
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}


def test_runner_errors_alarm_notifies_the_topic():
    tpl = template("runner.yaml")
    alarm = resolve(tpl["Resources"]["RunnerErrorsAlarm"], tpl, {})["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", "Errors")
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": "<RunnerFunction>"}]
    assert alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["AlarmActions"] == ["<Notifications>"]
    assert alarm["TreatMissingData"] == "notBreaching"


def test_campaign_table_outlives_the_stack_and_can_be_restored():
    table = template("runner.yaml")["Resources"]["CampaignTable"]
    assert table["DeletionPolicy"] == "Retain"
    assert table["UpdateReplacePolicy"] == "Retain"
    props = table["Properties"]
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True}


def test_email_subscription_only_when_an_address_is_given():
    tpl = template("runner.yaml")
    subscription = tpl["Resources"]["NotificationsEmail"]
    assert subscription["Condition"] == "SubscribeEmail"
    resolver_true = resolve({"Condition": "SubscribeEmail"}, tpl, {"AlarmEmail": "a@b.example"})
    resolver_false = resolve({"Condition": "SubscribeEmail"}, tpl, {})
    assert resolver_true is True
    assert resolver_false is False


def test_wave_groups_expand_to_valid_distinct_thing_groups():
    tpl = template("fleet.yaml")
    collection_ref, body = (
        tpl["Resources"]["Fn::ForEach::WaveGroups"][1],
        tpl["Resources"]["Fn::ForEach::WaveGroups"][2],
    )
    assert collection_ref == {"Ref": "WaveGroupNames"}
    ((logical_pattern, resource),) = body.items()
    assert resource["Type"] == "AWS::IoT::ThingGroup"
    assert resource["Properties"]["ThingGroupName"] == {"Ref": "GroupName"}
    names = resolve({"Ref": "WaveGroupNames"}, tpl, {})
    assert names == ["canary", "fleet-a", "fleet-b", "fleet-c"]
    assert all(THING_GROUP_NAME.fullmatch(n) for n in names)
    logical_ids = {
        logical_pattern.replace("&{GroupName}", re.sub(r"[^A-Za-z0-9]", "", n)) for n in names
    }
    assert len(logical_ids) == len(names)


def test_job_template_only_with_a_document():
    tpl = template("fleet.yaml")
    assert tpl["Resources"]["MigrationJobTemplate"]["Condition"] == "MakeJobTemplate"
    assert resolve({"Condition": "MakeJobTemplate"}, tpl, {}) is False
    with_doc = {"JobDocumentS3Url": "https://bucket.s3.amazonaws.com/migrate.json"}
    assert resolve({"Condition": "MakeJobTemplate"}, tpl, with_doc) is True
