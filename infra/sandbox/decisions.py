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

# --- execution state machine ---------------------------------------------
# The device may go QUEUED -> SUCCEEDED | FAILED | REJECTED without IN_PROGRESS.
DEVICE_MAY_SKIP_IN_PROGRESS: Final = True
# Service-made changes (timeout, cancel, removal) raise versionNumber too.
SERVICE_CHANGES_BUMP_VERSION: Final = True
# A retry is a new execution: executionNumber + 1, versionNumber back to 1,
# statusDetails cleared, queuedAt = the retry's time; the previous attempt stays
# readable through DescribeJobExecution(executionNumber=...).
RETRY_RESTARTS_VERSION: Final = True
# A statusDetails map given on an update replaces the stored map (omitted: unchanged).
STATUS_DETAILS_REPLACE: Final = True
# Updating a terminal execution is InvalidStateTransition; this is checked before
# expectedVersion, so a device retrying its final update learns the outcome.
TERMINAL_CHECKED_BEFORE_VERSION: Final = True
# start-next with an IN_PROGRESS execution pending returns it unchanged.
START_NEXT_RETURNS_IN_PROGRESS_UNCHANGED: Final = True
# An unknown thing on the device data plane is ResourceNotFound (not an empty list).
UNKNOWN_THING_IS_NOT_FOUND: Final = True

# --- rollout ----------------------------------------------------------------
# Without jobExecutionsRolloutConfig every target is notified at creation.
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
# Maintenance windows gate notification only: outside every window no new thing is
# notified (the rollout rate, if any, applies inside windows); executions notified
# earlier stay visible and can run after a window closes. maintenanceWindows
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

# --- cancel / delete / targets ---------------------------------------------
# CancelJob on a CANCELED job succeeds (with force it also cancels what is still
# IN_PROGRESS); on a COMPLETED job it is InvalidRequestException.
# DeleteJob is immediate (no DELETION_IN_PROGRESS phase).
# CreateJob naming a thing or group that does not exist: ResourceNotFoundException.
# documentSource (S3) is refused: the sandbox cannot read S3.
# The job document must be a JSON object (devices get it as one over MQTT).
# A CONTINUOUS job's pending execution becomes REMOVED when its thing leaves the
# last targeted group; terminal executions stay as they are.

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
