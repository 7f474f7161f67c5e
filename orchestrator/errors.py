"""The orchestrator's errors, classified by what the caller should do.

```
OrchestratorError
 ├── SpecError            the campaign file is invalid: fix the listed lines (exit 2)
 ├── UsageError           a command that does not apply now (unknown wave, wrong state) (exit 2)
 │    └── EndpointCheckError   the new endpoint did not prove itself with the campaign's
 │                             roots (unreachable, wrong chain, wrong name): nothing started
 ├── StateError           the state store cannot serve the request
 │    ├── CampaignNotFoundError    no campaign by that name in this store
 │    ├── CampaignExistsError      `start` for a name already started with another spec
 │    ├── LeaseHeldError           another reconcile holds the campaign's lease: retry later
 │    └── VersionConflictError     the state changed under us: re-read and retry
 ├── RunnerConfigError    (runner_lambda) the runner's environment is incomplete
 ├── RunnerFailedError    (runner_lambda) at least one campaign's step failed
 └── AwsError             AWS (or the sandbox) refused or failed a call; botocore's
      │                   ClientError never escapes the adapter
      ├── IndexingUnavailableError fleet indexing is off, not built, or lacks a field the
      │                            census aggregates (exit 2 with how to turn it on)
      ├── JobExistsError           CreateJob found the id taken (reconcile then adopts the job)
      ├── UnknownThingGroupError   a wave names a thing group that does not exist (exit 2)
      ├── JobConflictError         a job with our deterministic id exists with another document
      ├── WrongRegionError         a job the campaign touches is in another region than its
      │                            wave's (a client of the wrong region): nothing is written
      ├── GroupConflictError       a thing group with the campaign's deterministic name exists
      │                            and is not the campaign's (another query or owner)
      └── JobRefusedError          CreateJob refused as an invalid request: the campaign
                                   halted with the reason (also a UsageError: exit 2)
```
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AwsError",
    "CampaignExistsError",
    "CampaignNotFoundError",
    "EndpointCheckError",
    "GroupConflictError",
    "IndexingUnavailableError",
    "JobConflictError",
    "JobExistsError",
    "JobRefusedError",
    "LeaseHeldError",
    "OrchestratorError",
    "SpecError",
    "SpecProblem",
    "StateError",
    "UnknownThingGroupError",
    "UsageError",
    "VersionConflictError",
    "WrongRegionError",
]


class OrchestratorError(Exception):
    """Root of every error the orchestrator raises on purpose."""


@dataclass(frozen=True, slots=True)
class SpecProblem:
    """One problem in a campaign file, located by line and key path."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        key = f" ({self.path})" if self.path else ""
        return f"{where}{key}: {self.message}"


class SpecError(OrchestratorError):
    """The campaign file is invalid; `problems` lists every problem found."""

    def __init__(self, source: str, problems: tuple[SpecProblem, ...]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {source}: {p}" for p in problems)
        super().__init__(f"invalid campaign file {source}:\n{lines}")


class UsageError(OrchestratorError):
    """A command that does not apply to the campaign as it stands."""


class EndpointCheckError(UsageError):
    """The campaign's endpoint did not verify with the roots it pushes; `reason` says how."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class StateError(OrchestratorError):
    """The state store cannot serve the request."""


class CampaignNotFoundError(StateError):
    """No campaign by that name in this state store."""


class CampaignExistsError(StateError):
    """A campaign by that name was already started with a different campaign file."""


class LeaseHeldError(StateError):
    """Another reconcile holds this campaign's lease."""


class VersionConflictError(StateError):
    """The stored campaign changed since it was read."""


class AwsError(OrchestratorError):
    """An AWS call failed; `code` is the service's error code when there is one."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        self.code = code
        super().__init__(message)


class IndexingUnavailableError(AwsError):
    """Fleet indexing cannot answer: off, still building, or a census field is not indexed."""


class JobExistsError(AwsError):
    """CreateJob found a job with that id already there."""


class UnknownThingGroupError(AwsError):
    """A wave names a thing group that does not exist."""


class JobConflictError(AwsError):
    """A job with the campaign's deterministic id exists but carries another document."""


class WrongRegionError(AwsError):
    """A job the reconciler touched lives in another region than its wave runs in."""


class JobRefusedError(AwsError, UsageError):
    """AWS refused a wave's CreateJob as an invalid request; the campaign was halted."""


class GroupConflictError(AwsError):
    """A thing group with the campaign's deterministic name exists and is not the campaign's."""
