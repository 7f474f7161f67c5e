"""Campaign files: the job settings a wave carries, and the base of every file model.

The settings are execution timeouts and retries, the halt rule, rollout, gate and
maintenance windows.

Kept beside `orchestrator.spec`, which composes these models into the campaign file and
locates their errors; the bounds are AWS's own where AWS has them (CreateJob's shapes).
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestrator.cron import CronSyntaxError, check_cron
from orchestrator.model import ExecutionPolicy

#: AWS's integer shapes are 32-bit; counts beyond that cannot reach CreateJob.
MAX_COUNT: Final = 2**31 - 1
#: Two years, AWS's longest job schedule (schedulingConfig.endTime), in minutes.
MAX_MINUTES: Final = 2 * 365 * 24 * 60

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Count = Annotated[int, Field(ge=1, le=MAX_COUNT)]


class _Model(BaseModel):
    # allow_inf_nan=False: `.inf`, `.nan` and `1e999` (which YAML reads as inf) are refused.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


MAX_RETRIES_IN_ALL: Final = 10


class RetriesModel(_Model):
    failed: int = Field(0, ge=0, le=10, description="Retries after FAILED.")
    timed_out: int = Field(0, ge=0, le=10, description="Retries after TIMED_OUT.")

    @model_validator(mode="after")
    def _ten_in_all(self) -> RetriesModel:
        # AWS caps a job's retries at 10 across its criteria (jobExecutionsRetryConfig): more is
        # refused at CreateJob, so refuse it here, at plan, before a wave is launched.
        if self.failed + self.timed_out > MAX_RETRIES_IN_ALL:
            raise ValueError(
                f"failed ({self.failed}) and timed_out ({self.timed_out}) retries add up to "
                f"{self.failed + self.timed_out}; AWS allows at most {MAX_RETRIES_IN_ALL} in all"
            )
        return self


class ExecutionModel(_Model):
    in_progress_timeout_minutes: int | None = Field(
        None, ge=1, le=10080, description="timeoutConfig.inProgressTimeoutInMinutes."
    )
    retries: RetriesModel = RetriesModel()

    def to_policy(self) -> ExecutionPolicy:
        return ExecutionPolicy(
            in_progress_timeout_minutes=self.in_progress_timeout_minutes,
            retry_failed=self.retries.failed,
            retry_timed_out=self.retries.timed_out,
        )


class HaltModel(_Model):
    max_failure_rate: Fraction = Field(
        1.0,
        description=(
            "Per wave: halt when failures / completed reaches this (abortConfig too); "
            "1.0 never halts on the rate."
        ),
    )
    fleet_failure_budget: int | None = Field(
        None,
        ge=0,
        le=MAX_COUNT,
        description="Failed devices across all waves before everything stops.",
    )
    min_executed: int = Field(
        10,
        ge=1,
        le=MAX_COUNT,
        description="Completed executions before the failure rate is judged.",
    )


class ExponentialModel(_Model):
    base_rate_per_minute: int = Field(ge=1, le=1000)
    increment_factor: float = Field(
        ge=1.1,
        le=5.0,
        description="One digit after the decimal point at most (AWS: 1.5, not 1.55).",
    )
    notified_things: Count | None = None
    succeeded_things: Count | None = None

    @field_validator("increment_factor")
    @classmethod
    def _one_decimal(cls, value: float) -> float:
        if abs(value * 10 - round(value * 10)) > 1e-9:  # noqa: PLR2004 - float tolerance
            raise ValueError("AWS takes at most one digit after the decimal point (1.5, not 1.55)")
        return value

    @model_validator(mode="after")
    def _one_criterion(self) -> ExponentialModel:
        if (self.notified_things is None) == (self.succeeded_things is None):
            raise ValueError("give exactly one of notified_things or succeeded_things")
        return self


class RolloutModel(_Model):
    maximum_per_minute: int | None = Field(None, ge=1, le=1000)
    exponential: ExponentialModel | None = None


class GateModel(_Model):
    min_success_rate: Fraction = Field(
        description="The Wilson lower bound of the success rate must reach this."
    )
    min_completed: int = Field(
        1, ge=1, le=MAX_COUNT, description="Completed executions needed (absolute)."
    )
    min_completed_fraction: Fraction = Field(0.0, description="Completed / targeted needed.")
    bake_minutes: float = Field(
        0.0, ge=0, le=MAX_MINUTES, description="Wait after the gate passed (at most two years)."
    )
    confidence: float = Field(
        0.95, gt=0.5, lt=1.0, description="One-sided confidence of the Wilson bounds."
    )


class WindowModel(_Model):
    start: str = Field(
        max_length=256,
        description="AWS cron expression, cron(minutes hours day-of-month month day-of-week "
        "year), UTC.",
    )
    duration_minutes: int = Field(ge=1, le=1430)

    @field_validator("start")
    @classmethod
    def _aws_cron(cls, value: str) -> str:
        try:
            check_cron(value)
        except CronSyntaxError as exc:
            raise ValueError(f"not an AWS cron expression: {exc}") from None
        return value
