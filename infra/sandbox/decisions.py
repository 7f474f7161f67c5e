"""Every choice the sandbox makes where the live service's behaviour is unconfirmed.

Kept in one place so docs/sandbox.md can list them and a test can pin each.
Limits the botocore model does not carry (it has only some min/max values)
are here too, with the AWS documentation's figure.
"""

from __future__ import annotations

from typing import Final

# --- identity -------------------------------------------------------------
ACCOUNT_ID: Final = "123456789012"
DEFAULT_REGION: Final = "us-east-1"
ENDPOINT_PREFIX: Final = "a1sandbox2demo"
# --- regions ------------------------------------------------------------------
# AWS serves each region on its own hosts; the sandbox serves every region on one port
# and routes a request by the region of its SigV4 credential scope (infra/sandbox/sigv4.py).
# A request with no signature goes to the first region. A single-region sandbox takes a
# request signed for any region (what it always did). A multi-region sandbox refuses a
# region it does not serve with this error: AWS answers a request signed for the wrong
# region with a signature error, and that is what a wrong region most resembles.
UNSERVED_REGION_ERROR: Final = ("InvalidSignatureException", 403)

# --- limits (documented by AWS, not in the botocore model) ------------------
MAX_TARGETS_PER_JOB: Final = 100
MAX_DOCUMENT_CHARS: Final = 32768
MAX_GROUPS_PER_THING: Final = 10
MAX_GROUP_DEPTH: Final = 7
# Active jobs (IN_PROGRESS, snapshot and continuous alike; SCHEDULED ones are not).
MAX_ACTIVE_JOBS: Final = 100
MAX_PER_MINUTE: Final = 1000
MAX_IN_PROGRESS_TIMEOUT_MINUTES: Final = 10080
MAX_STEP_TIMEOUT_MINUTES: Final = 10080
MAX_RETRIES_PER_DEVICE: Final = 10
MAX_STATUS_DETAILS: Final = 10
STATUS_DETAILS_KEY_PATTERN: Final = r"[a-zA-Z0-9:_-]+"
STATUS_DETAILS_KEY_MAX: Final = 128
STATUS_DETAILS_VALUE_MAX: Final = 1024
# GetPendingJobExecutions (and the MQTT `get` / notify lists) show at most this many
# pending executions, IN_PROGRESS ones first, then the oldest QUEUED. AWS allows 15
# for jobs with a scheduling configuration; the sandbox keeps the stricter 10.
MAX_PENDING_LISTED: Final = 10

# --- the execution object over MQTT (render.mqtt_execution) ----------------
# AWS documents one JobExecution for the MQTT and HTTPS device APIs (the developer
# guide's "Jobs device MQTT and HTTPS data types": jobId, thingName, jobDocument,
# status, statusDetails, queuedAt, startedAt, lastUpdatedAt, versionNumber,
# executionNumber; the API reference adds approximateSecondsBeforeTimedOut). The
# service's MQTT answers disagree: the developer guide's notify-next examples, and the
# start-next/accepted and notify-next messages captured against AWS in the AWS IoT
# Device SDK v2 jobs sample walkthrough (samples/service_clients/jobs.md,
# `thing_name=None`, `status_details=None`), carry no thingName, and an empty
# statusDetails is left out. Over MQTT (start-next, `{jobId}/get`, notify-next alike)
# the sandbox sends these fields only, so a device that reads thingName or
# approximateSecondsBeforeTimedOut from an MQTT execution fails here as it may on AWS
# (the SDK's JobExecutionData has no field for the latter). Over HTTPS
# (iot-jobs-data) the execution keeps both, as the AWS CLI's examples show.
MQTT_EXECUTION_FIELDS: Final = frozenset(
    {
        "jobId",
        "jobDocument",
        "status",
        "statusDetails",
        "queuedAt",
        "startedAt",
        "lastUpdatedAt",
        "versionNumber",
        "executionNumber",
    }
)

# --- execution state machine ---------------------------------------------
# The device may go QUEUED -> SUCCEEDED | FAILED | REJECTED without IN_PROGRESS.
DEVICE_MAY_SKIP_IN_PROGRESS: Final = True
# The choices below are fixed in the engine (`engine/_state.py`, `_policies.py`,
# `_devices.py`), not flags: each has one implementation and a test.
# - Service-made changes (timeout, cancel, removal) raise versionNumber too.
# - A retry is a new execution: executionNumber + 1, versionNumber back to 1,
#   statusDetails cleared, queuedAt = the retry's time; the previous attempt stays
#   readable through DescribeJobExecution(executionNumber=...).
# - A statusDetails map given on an update replaces the stored map (omitted:
#   unchanged).
# - Updating a terminal execution is InvalidStateTransition; this is checked before
#   expectedVersion, so a device retrying its final update learns the outcome.
# - start-next with an IN_PROGRESS execution pending returns it unchanged.
# - An unknown thing on the device data plane is ResourceNotFound (not an empty
#   list).

# --- rollout ----------------------------------------------------------------
# Without jobExecutionsRolloutConfig a job rolls out at AWS's default pace,
# DEFAULT_PER_MINUTE things a minute (AWS: "If you don't set the value, it uses 1000
# as the default value"; "AWS IoT Jobs can roll out and cancel job executions swiftly
# at a rate of 1000 devices per minute"), in the same batches as an explicit
# maximumPerMinute; DescribeJob shows no jobExecutionsRolloutConfig for it.
# JobsEngine(default_per_minute=None) notifies every target at once instead, for unit
# tests that need instant fan-out (not what AWS does).
DEFAULT_PER_MINUTE: Final = 1000
# With one, things are notified in batches, one batch per ROLLOUT_PERIOD_SECONDS,
# the first at creation; batch size = floor(current rate). The exponential rate
# is re-evaluated at each batch: for every further `N` things notified (or
# succeeded) since the last increase, rate *= incrementFactor, capped by
# maximumPerMinute (when given) and MAX_PER_MINUTE.
ROLLOUT_PERIOD_SECONDS: Final = 60.0

# --- scheduling (schedulingConfig) ---------------------------------------------
# Documented: startTime at least 30 minutes from now; endTime at least 30 minutes
# after startTime (or after now without one) and at most two years away;
# maintenance windows last 1-1430 minutes (the model's range).
SCHEDULE_MIN_LEAD_SECONDS: Final = 30 * 60.0
SCHEDULE_MIN_DURATION_SECONDS: Final = 30 * 60.0
SCHEDULE_MAX_END_SECONDS: Final = 2 * 365 * 86400.0
# The developer guide allows a start up to 62 days ahead; the API reference says a
# year. The sandbox takes the stricter figure, so a plan accepted here fits both.
SCHEDULE_MAX_START_AHEAD_SECONDS: Final = 62 * 86400.0
# A job with a startTime is SCHEDULED (no executions, all counts zero) until then;
# its targets are resolved at startTime, not at creation.
# endTime without endBehavior behaves as STOP_ROLLOUT: things not yet notified never
# are; executions already notified run on and the job completes when they end.
# CANCEL and FORCE_CANCEL cancel the job as CancelJob would (without / with force),
# with this reasonCode.
SCHEDULE_DEFAULT_END_BEHAVIOR: Final = "STOP_ROLLOUT"
SCHEDULE_END_REASON_CODE: Final = "SCHEDULED_END_TIME"
# Maintenance windows gate notification: outside every window no new thing is
# notified (the rollout rate, if any, applies inside windows). AWS documents that an
# IN_PROGRESS job reaching the end of its window goes back to SCHEDULED until the next
# window; the sandbox does so when the rollout still has things to notify (a job whose
# rollout is done has nothing to resume and stays IN_PROGRESS), and a job created or
# started outside a window is SCHEDULED until one opens. Executions notified earlier
# stay visible and can run, be retried and count for abort between windows; an
# endTime between windows ends the job as it would inside one. maintenanceWindows
# without a startTime are accepted: the rollout starts at the first window.
# DescribeJob lists the next SCHEDULED_ROLLOUTS_SHOWN window starts in
# scheduledJobRollouts as "YYYY-MM-DDTHH:MM" (UTC).
SCHEDULED_ROLLOUTS_SHOWN: Final = 7

# --- abort ------------------------------------------------------------------
# "Executed" = SUCCEEDED + FAILED + REJECTED + TIMED_OUT (current execution per
# thing; a failure that is being retried is not counted until its last attempt).
# Abort when failures of the type / executed * 100 >= thresholdPercentage (AWS:
# "the minimum percentage of job execution failures that must occur"), once
# executed >= minNumberOfExecutedThings. ALL = FAILED + REJECTED + TIMED_OUT.
# thresholdPercentage 0 is taken literally: the job aborts once
# minNumberOfExecutedThings executed, failures or not (AWS does not say otherwise).
ABORT_EXECUTED_STATUSES: Final = frozenset({"SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT"})
ABORT_REASON_CODE: Final = "ABORT_CRITERIA_MET"

# --- retry ------------------------------------------------------------------
# The criterion naming the failure type (FAILED / TIMED_OUT) wins over ALL;
# retryAttempt counts all retries of the thing's execution. CreateJob / UpdateJob
# refuse criteria whose numberOfRetries add up to more than MAX_RETRIES_PER_DEVICE.

# --- UpdateJob ----------------------------------------------------------------
# AWS documents which members UpdateJob changes, not when each takes effect. The
# sandbox: a job can be updated while it is one of these (a COMPLETED or CANCELED
# job is InvalidRequestException); a new rollout rate applies from the next batch,
# an exponential rate starting again at its base rate and counting increases from
# the update; a new timeout applies to executions that start afterwards; new abort
# criteria are checked at once against the current counts; presignedUrlConfig and
# namespaceId are accepted and ignored.
UPDATABLE_JOB_STATUSES: Final = frozenset({"IN_PROGRESS", "SCHEDULED"})

# --- thing groups -------------------------------------------------------------
# AWS documents that a thing cannot be in two groups of one hierarchy (groups under
# one root, parent and child included) but not the error; the sandbox answers
# InvalidRequestException naming the group the thing is already in.

# --- dynamic thing groups -----------------------------------------------------
# AWS builds a dynamic group's membership in the background (status BUILDING, then
# ACTIVE) and updates it as the index changes, eventually. The sandbox builds it at
# once (status always ACTIVE) and re-evaluates a thing when its registry entry or
# static groups change (before the operation returns) or its named shadows change
# (by the next operation or the scheduler thread). Joining a dynamic group does not
# itself re-evaluate the thing against the other dynamic groups (a query on
# thingGroupNames sees the dynamic groups the thing was in before). A thing already
# in MAX_GROUPS_PER_THING groups does not join a dynamic group it matches.
# AddThingToThingGroup / RemoveThingFromThingGroup on a dynamic group, a dynamic
# group as a parent, and turning thing indexing OFF while dynamic groups exist are
# InvalidRequestException (AWS documents the rules, not the errors);
# CreateDynamicThingGroup while indexing is OFF is InvalidRequestException too.
# Creating a dynamic group that exists with the same query answers with it (as
# CreateThingGroup does); another query, or a static group of that name, is
# ResourceAlreadyExistsException. The account limit is AWS's documented quota.
MAX_DYNAMIC_GROUPS: Final = 100
# A query nesting parentheses or NOT deeper than job_documents.fleet_query.MAX_NESTING
# (32) levels is InvalidQueryException (SearchIndex, the aggregations, dynamic groups):
# AWS documents no such bound; the sandbox needs one so that a hostile query cannot
# exhaust the parser's stack.

# --- cancel / delete / targets ---------------------------------------------
# CancelJob on a CANCELED job succeeds (with force it also cancels what is still
# IN_PROGRESS); on a COMPLETED job it is InvalidRequestException.
# CreateJob naming a thing or group that does not exist: ResourceNotFoundException.
# CreateThingGroup under a parent that does not exist: ResourceNotFoundException (404),
# although botocore's model lists no ResourceNotFoundException for CreateThingGroup;
# AWS's answer is unconfirmed (tests/sandbox/test_modeled_errors.py keeps this the one
# error outside the model among the identity, registry and group calls).
# documentSource (S3) is refused: the sandbox cannot read S3.
# The job document must be a JSON object (devices get it as one over MQTT).
# A thing that leaves the last targeted group (AWS: "no longer scheduled to execute
# the job"): a SNAPSHOT job's QUEUED execution becomes REMOVED, an IN_PROGRESS one
# runs on (the device already has it); a CONTINUOUS job's QUEUED or IN_PROGRESS
# execution becomes REMOVED; terminal executions stay as they are. When the thing
# comes back to a CONTINUOUS job's group, its REMOVED execution restarts: QUEUED,
# executionNumber + 1, versionNumber 1 (the earlier attempt stays readable).

# --- eventual consistency of CancelJob and DeleteJob ---------------------------
# AWS cancels a job's executions and deletes a job asynchronously: a job is
# concurrent (isConcurrent) while "canceling previously created executions", and
# DELETION_IN_PROGRESS while it is deleted; its id can be reused only once deletion
# completes. AWS does not say how long either takes; the sandbox takes these many
# sandbox seconds (JobsEngine(cancel_delay=..., delete_delay=...); 0 is immediate).
# A canceled job is CANCELED at once (reasonCode, comment, no further rollout); its
# QUEUED executions (and IN_PROGRESS ones when forced) become CANCELED after
# CANCEL_PROPAGATION_SECONDS, so a device may still start one meanwhile, as in AWS.
# Abort and a scheduled end with CANCEL / FORCE_CANCEL cancel the same way.
# A job being deleted stays readable (DescribeJob, ListJobs, its executions) until
# deletion completes. AWS: deleting or canceling it again "will result in an error"
# (the sandbox: InvalidStateTransitionException); CreateJob with its id is
# ResourceAlreadyExistsException, UpdateJob InvalidRequestException. At most
# MAX_DELETIONS_IN_PROGRESS jobs may be DELETION_IN_PROGRESS (LimitExceededException,
# as AWS documents).
CANCEL_PROPAGATION_SECONDS: Final = 2.0
DELETION_SECONDS: Final = 5.0
MAX_DELETIONS_IN_PROGRESS: Final = 10

# --- quotas (archived 2019 table; enforced only when asked) -------------------
# Transactions per second per operation; `--enforce-quotas` / the admin API turn
# them on. Other operations are not limited.
API_TPS: Final = {
    "CreateJob": 10.0,
    "DescribeJob": 10.0,
    "ListJobExecutionsForJob": 10.0,
    "CancelJob": 10.0,
    "GetJobDocument": 10.0,
}

# --- faults ------------------------------------------------------------------
# "Unavailable for N seconds" is measured on the sandbox clock (it scales with
# --time-scale, and a manual clock ends it when advanced).
DEFAULT_PAGE_SIZE: Final = 50

# --- device identity (engine/_certificates.py, engine/_principals.py) -------
# CreateKeysAndCertificate issues an RSA 2048 key and a certificate with this subject
# CN, as AWS does; the sandbox signs it with its device CA (an in-memory CA when it runs
# without a PKI), valid for ISSUED_CERTIFICATE_DAYS.
ISSUED_CERTIFICATE_COMMON_NAME: Final = "AWS IoT Certificate"
ISSUED_CERTIFICATE_DAYS: Final = 5 * 365
# ListCertificates without pageSize returns this many (the model allows 1-250).
CERTIFICATES_PAGE_SIZE: Final = 25
# RegisterCertificate / RegisterCertificateWithoutCA without `status` or `setAsActive`
# register the certificate INACTIVE, as CreateKeysAndCertificate without setAsActive.
# Statuses AWS uses internally (PENDING_TRANSFER, PENDING_ACTIVATION) and the deprecated
# REGISTER_INACTIVE are refused with InvalidRequestException by both calls and by
# UpdateCertificate. A certificate whose issuer is not a registered CA is refused by
# RegisterCertificate with CertificateValidationException. DetachThingPrincipal of a
# certificate that is not attached succeeds (idempotent). DeleteThing of a thing with a
# principal attached is refused as AWS refuses it (docs/sandbox.md, behaviour table).
# UpdateCertificate out of ACTIVE closes the certificate's live
# MQTT connections at once (AWS: "within a few minutes"); DetachThingPrincipal does not
# close them (the policy is evaluated at CONNECT).
# A CONNECT the device policy refuses: MQTT 5 gets CONNACK reason 0x87 (Not authorized)
# and the connection is closed; MQTT 3.1.1 gets no CONNACK: the connection is closed
# (clients see the broker hang up).
CONNECT_REFUSED_V5_REASON: Final = 0x87
# DetachThingPrincipal "is asynchronous. It might take several seconds for the
# detachment to propagate" (AWS), and a DeleteThing right after it can still be refused
# as attached (aws/aws-connected-device-framework#76). The sandbox makes "several" this
# many sandbox seconds after a thing's last detach, for DeleteThing only: a teardown must
# wait (or retry) here as on AWS. List calls and the connect rule see the detach at once.
DETACH_PROPAGATION_SECONDS: Final = 5.0
# Under `--connect-policy any-client-id` (the SDK samples' policy: iot:Connect on client/*,
# topics of a thing named in the policy) the sandbox, which keeps no policy documents, lets
# a connection use the topics of the one thing its certificate is attached to; a
# certificate attached to none or to several things is refused as by the device policy.
# An empty client id is admitted (AWS assigns one); the broker sees the thing's name as
# client id, and the CONNACK carries no Assigned Client Identifier.

# --- simulated AWS IoT Device Client devices (infra/sandbox/fleet/device_client.py) ---------
# Device Client runs runCommand steps too; the simulation runs runHandler steps only and
# rejects a document with a runCommand step, saying so.
DEVICE_CLIENT_RUN_COMMAND: Final = "runCommand steps are not simulated; use runHandler"
# Device Client's README counts a step as passed when the handler exits 0 with at most
# allowStdErr lines of stderr (default 0); the simulation follows the README (JobEngine.cpp
# of some releases reads allowStdErr differently).
# Device Client sends statusDetails `stdout`/`stderr` unfiltered (its source has a TODO to
# drop control characters); the simulation replaces them with spaces and keeps the last
# 1,024 characters, which AWS accepts.
# The device's `/` is `<fleet root>/<thing>/fs`: absolute paths in a step (`path`, and
# arguments that start with `/`) are resolved inside it, as under a chroot. A handler is
# only ever a file inside it: one that climbs out (`..`) is not found, and a step without
# `path` searches the device's /usr/local/bin, /usr/bin and /bin, never the host's PATH
# (a job document must not run host commands). Not found: the step FAILED.
# A Device Client device connects, at its first job, to the endpoint its configuration
# names, and keeps that connection (and reports over it) until `restart()`; the fleet
# restarts a device once its job SUCCEEDED, as an operator is told to (docs/runbook.md).
DEVICE_CLIENT_RESTARTS_AFTER_SUCCESS: Final = True
# Device Client's configuration has no port: it sets only the endpoint on the CRT's
# connection builder (SharedCrtResourceManager.cpp), which picks 443 with ALPN
# x-amzn-mqtt-ca where the TLS stack has ALPN (Linux) and 8883 elsewhere. The simulated
# Device Client's own connection is modelled by host only (which endpoint it reports via);
# the port is what the handler's probe uses: the document's (443 goes to the ATS endpoint's
# ALPN listener through device.toml's [connect_override]). A simulated device pins the
# document-signing key the fleet pins (device.toml `signing_public_key`), as agents do.
