"""Campaign files: YAML in, a validated `CampaignSpec` out, every error located.

The file is parsed twice from the same text: once by PyYAML's composer to keep
each key's line and column, once into plain data that pydantic validates.
A pydantic error's location (a key path) is mapped back to the line that
holds that key, so the operator reads `line 14 (waves[1].gate.min_success_rate):
...` instead of a traceback. Duplicate keys, which YAML silently collapses,
are reported too.

The JSON Schema of the file (`schema_path()`, `docs/campaign.schema.json`) is
generated from the same pydantic models; a test keeps the published copy in
sync.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.errors import SpecError, SpecProblem
from orchestrator.model import (
    Approval,
    CampaignSpec,
    ExecutionPolicy,
    ExponentialRate,
    Gate,
    Halt,
    MaintenanceWindow,
    OfflinePolicy,
    Rollout,
    TrustSpec,
    WaveSpec,
)

__all__ = ["CampaignFile", "load_spec", "parse_spec", "schema_path", "spec_json_schema"]

_NAME = r"^[A-Za-z0-9_-]{1,64}$"
_GROUP = r"^[a-zA-Z0-9:_-]{1,128}$"
_REGION = r"^[a-z]{2}(-[a-z]+)+-\d$"

Name = Annotated[str, Field(pattern=_NAME)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrustModel(_Model):
    add: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, max_length=10, description="Catalog root names (or SHA-256 fingerprints)."
    )
    keep_existing: bool = Field(default=True, description="Keep the roots the device trusts today.")


class RetriesModel(_Model):
    failed: int = Field(0, ge=0, le=10, description="Retries after FAILED.")
    timed_out: int = Field(0, ge=0, le=10, description="Retries after TIMED_OUT.")


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
        1.0, description="Per wave: halt when failures / completed exceeds this (abortConfig too)."
    )
    fleet_failure_budget: int | None = Field(
        None, ge=0, description="Failed devices across all waves before everything stops."
    )
    min_executed: int = Field(
        10, ge=1, description="Completed executions before the failure rate is judged."
    )


class ExponentialModel(_Model):
    base_rate_per_minute: int = Field(ge=1, le=1000)
    increment_factor: float = Field(ge=1.1, le=5.0)
    notified_things: int | None = Field(None, ge=1)
    succeeded_things: int | None = Field(None, ge=1)

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
    min_completed: int = Field(1, ge=1, description="Completed executions needed (absolute).")
    min_completed_fraction: Fraction = Field(0.0, description="Completed / targeted needed.")
    bake_minutes: float = Field(0.0, ge=0, description="Wait after the gate passed.")
    confidence: float = Field(
        0.95, gt=0.5, lt=1.0, description="One-sided confidence of the Wilson bounds."
    )


class WindowModel(_Model):
    start: str = Field(
        pattern=r"^cron\(.+\)$", description="cron() expression, as schedulingConfig wants it."
    )
    duration_minutes: int = Field(ge=1, le=1430)


class WaveModel(_Model):
    name: Name
    thing_groups: list[Annotated[str, Field(pattern=_GROUP)]] = Field(min_length=1, max_length=100)
    gate: GateModel
    rollout: RolloutModel = RolloutModel()
    approval: Literal["auto", "manual"] = "auto"
    deadline_minutes: float | None = Field(
        None, gt=0, description="After this, devices still QUEUED are counted as never started."
    )
    offline: Literal["ignore", "block"] = Field(
        "ignore", description="Whether never-started devices block promotion at the deadline."
    )
    execution: ExecutionModel | None = None
    max_failure_rate: Fraction | None = None
    maintenance_windows: list[WindowModel] = Field(default_factory=list, max_length=10)


class CampaignFile(_Model):
    """A campaign file, as operators write it."""

    name: Name
    region: str = Field(pattern=_REGION)
    endpoint: str = Field(
        "auto",
        pattern=r"^(auto|[a-z0-9][a-z0-9.-]*[a-z0-9])$",
        description="'auto' (DescribeEndpoint iot:Data-ATS) or an explicit host.",
    )
    catalog: str | None = Field(
        None, description="A catalog file to take roots from instead of the packaged one."
    )
    trust: TrustModel
    execution: ExecutionModel = ExecutionModel()
    halt: HaltModel = HaltModel()
    waves: list[WaveModel] = Field(min_length=1, max_length=50)

    def to_spec(self, base_dir: Path | None = None) -> CampaignSpec:
        catalog = self.catalog
        if catalog is not None and base_dir is not None and not Path(catalog).is_absolute():
            catalog = str((base_dir / catalog).resolve())
        return CampaignSpec(
            name=self.name,
            region=self.region,
            endpoint=self.endpoint,
            trust=TrustSpec(add=tuple(self.trust.add), keep_existing=self.trust.keep_existing),
            execution=self.execution.to_policy(),
            halt=Halt(
                max_failure_rate=self.halt.max_failure_rate,
                fleet_failure_budget=self.halt.fleet_failure_budget,
                min_executed=self.halt.min_executed,
            ),
            catalog=catalog,
            waves=tuple(_wave(w) for w in self.waves),
        )


def _wave(w: WaveModel) -> WaveSpec:
    exp = w.rollout.exponential
    return WaveSpec(
        name=w.name,
        thing_groups=tuple(w.thing_groups),
        gate=Gate(
            min_success_rate=w.gate.min_success_rate,
            min_completed=w.gate.min_completed,
            min_completed_fraction=w.gate.min_completed_fraction,
            bake_minutes=w.gate.bake_minutes,
            confidence=w.gate.confidence,
        ),
        rollout=Rollout(
            maximum_per_minute=w.rollout.maximum_per_minute,
            exponential=None
            if exp is None
            else ExponentialRate(
                base_rate_per_minute=exp.base_rate_per_minute,
                increment_factor=exp.increment_factor,
                notified_things=exp.notified_things,
                succeeded_things=exp.succeeded_things,
            ),
        ),
        approval=Approval(w.approval),
        deadline_minutes=w.deadline_minutes,
        offline=OfflinePolicy(w.offline),
        execution=None if w.execution is None else w.execution.to_policy(),
        max_failure_rate=w.max_failure_rate,
        maintenance_windows=tuple(
            MaintenanceWindow(start=m.start, duration_minutes=m.duration_minutes)
            for m in w.maintenance_windows
        ),
    )


Marks = dict[tuple[str | int, ...], tuple[int, int]]


def _collect_marks(
    node: yaml.Node, path: tuple[str | int, ...], marks: Marks, dupes: list[SpecProblem]
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            here = (*path, key)
            line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key in seen:
                dupes.append(
                    SpecProblem(_dotted(here), "key given twice; keep one", line=line, column=col)
                )
            seen.add(key)
            marks[here] = (line, col)
            _collect_marks(value_node, here, marks, dupes)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            here = (*path, index)
            marks[here] = (item.start_mark.line + 1, item.start_mark.column + 1)
            _collect_marks(item, here, marks, dupes)


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _locate(loc: tuple[str | int, ...], marks: Marks) -> tuple[int, int] | None:
    for cut in range(len(loc), 0, -1):
        found = marks.get(loc[:cut])
        if found is not None:
            return found
    return None


def parse_spec(text: str, source: str = "<campaign>", base_dir: Path | None = None) -> CampaignSpec:
    """Validate a campaign file's text; raise `SpecError` listing every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(
            source, (SpecProblem("", f"not valid YAML: {problem}", line, column),)
        ) from exc
    if not isinstance(data, Mapping):
        raise SpecError(
            source, (SpecProblem("", "a campaign file is a YAML mapping (name:, waves:, ...)"),)
        )
    marks: Marks = {}
    dupes: list[SpecProblem] = []
    if root is not None:
        _collect_marks(root, (), marks, dupes)
    try:
        model = CampaignFile.model_validate(data)
    except ValidationError as exc:
        problems = list(dupes)
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
            # pydantic names the failing branch of a union in loc; drop what the file lacks.
            loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
            where = _locate(loc, marks)
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                message = "unknown key; check its spelling against docs/campaign.schema.json"
            elif err["type"] == "missing":
                message = "required key is missing"
            problems.append(
                SpecProblem(
                    _dotted(loc),
                    message,
                    line=where[0] if where else None,
                    column=where[1] if where else None,
                )
            )
        raise SpecError(source, tuple(problems)) from exc
    seen: set[str] = set()
    for index, wave in enumerate(model.waves):
        if wave.name in seen:
            where = marks.get(("waves", index, "name"))
            dupes.append(
                SpecProblem(
                    f"waves[{index}].name",
                    f"wave name {wave.name!r} is used twice; wave names must be unique",
                    line=where[0] if where else None,
                    column=where[1] if where else None,
                )
            )
        seen.add(wave.name)
    if dupes:
        raise SpecError(source, tuple(dupes))
    return model.to_spec(base_dir)


def load_spec(path: Path) -> CampaignSpec:
    """Read and validate a campaign file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(
            str(path), (SpecProblem("", f"cannot read the file: {exc.strerror}"),)
        ) from exc
    return parse_spec(text, str(path), base_dir=path.parent)


def spec_json_schema() -> dict[str, Any]:
    """The campaign file's JSON Schema (draft 2020-12), generated from the models."""
    schema = CampaignFile.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://ca-migrate.invalid/campaign.schema.json",
        **schema,
    }


def schema_path() -> Path:
    """Where the packaged copy of the schema lives."""
    return Path(__file__).resolve().parent / "schema" / "campaign.schema.json"


def render_schema() -> str:
    """The schema as it is published (stable key order, trailing newline)."""
    return json.dumps(spec_json_schema(), indent=2, sort_keys=True) + "\n"
