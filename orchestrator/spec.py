"""Campaign files: YAML in, a validated `CampaignSpec` out, every error located.

The text is composed once into PyYAML nodes (which keep each key's line and
column) and the nodes are constructed into plain data that pydantic validates.
A pydantic error's location (a key path) is mapped back to the line that
holds that key, so the operator reads `line 14 (waves[1].gate.min_success_rate):
...` instead of a traceback. Duplicate keys, which YAML silently collapses,
are reported too.

A campaign file may come from anywhere, so reading it is bounded before
anything grows with its content (docs/orchestrator.md, "Campaign file limits";
the bytes are read by `orchestrator.campaign_file`):

- at most `MAX_FILE_BYTES` are read, UTF-8 only (a UTF-16/32 byte-order mark or
  an invalid byte is reported with its line);
- the loader refuses aliases and anchors (a nine-by-nine alias "bomb" expands
  to gigabytes), explicit tags, merge keys (`<<`), more than `MAX_DEPTH`
  levels of nesting and more than `MAX_NODES` nodes;
- every number is finite and bounded (AWS's own limits where AWS has them),
  and maintenance windows are checked as AWS cron expressions.

A campaign's stored text is validated once per process (`parse_spec` keeps a
few results by text): `run` and the reconciler share one parse.

The JSON Schema of the file (`schema_path()`, `docs/campaign.schema.json`) is
generated from the same pydantic models; a test keeps the published copy in
sync.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from job_documents.fleet_query import QueryError, parse
from orchestrator.campaign_file import MAX_FILE_BYTES, read_campaign_text, too_large
from orchestrator.campaign_yaml import MAX_DEPTH, MAX_NODES, dotted, load_yaml, locate
from orchestrator.errors import SpecError, SpecProblem
from orchestrator.model import (
    Approval,
    CampaignSpec,
    DeviceRuntime,
    ExponentialRate,
    Gate,
    Halt,
    MaintenanceWindow,
    OfflinePolicy,
    Rollout,
    SampleSpec,
    SigningSpec,
    TrustSpec,
    WaveSpec,
)
from orchestrator.spec_device_client import DeviceClientModel, Runtime, runtime, runtime_problems
from orchestrator.spec_job_settings import (
    MAX_MINUTES,
    Count,
    ExecutionModel,
    Fraction,
    GateModel,
    HaltModel,
    RolloutModel,
    WindowModel,
    _Model,
)
from orchestrator.spec_regions import checked_region, region_problems
from orchestrator.targets import wave_targets

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "CampaignFile",
    "load_spec",
    "parse_spec",
    "read_campaign_text",
    "schema_path",
    "spec_json_schema",
]

_NAME = r"^[A-Za-z0-9_-]{1,64}$"
_GROUP = r"^[a-zA-Z0-9:_-]{1,128}$"
_REGION = r"^[a-z]{2}(-[a-z]+)+-\d$"
#: The document's signature.keyId pattern (job_documents' schema).
_KEY_ID = r"^[A-Za-z0-9._:-]{1,64}$"
#: A KMS key id, key ARN, alias name or alias ARN (KMS's own KeyId forms).
_KMS_KEY = (
    r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key/[A-Za-z0-9-]{1,64}|alias/[A-Za-z0-9/_-]{1,250})"
    r"|alias/[A-Za-z0-9/_-]{1,250}|[A-Za-z0-9-]{1,64})$"
)

Name = Annotated[str, Field(pattern=_NAME)]


class TrustModel(_Model):
    add: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        min_length=1, max_length=10, description="Catalog root names (or SHA-256 fingerprints)."
    )
    keep_existing: bool = Field(default=True, description="Keep the roots the device trusts today.")


class SigningModel(_Model):
    key_id: str = Field(
        pattern=_KEY_ID,
        description="Recorded in each document's signature.keyId (letters, digits, . _ : -).",
    )
    key_file: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="PEM private key (Ed25519 or ECDSA P-256), relative to the campaign file.",
    )
    kms_key: str | None = Field(
        None,
        max_length=2048,
        pattern=_KMS_KEY,
        description="AWS KMS key (id, ARN, alias/NAME or alias ARN): ECC_NIST_P256, SIGN_VERIFY.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> SigningModel:
        if (self.key_file is None) == (self.kms_key is None):
            raise ValueError("give exactly one of key_file or kms_key")
        return self


def _fleet_query(value: str) -> str:
    try:
        parse(value)
    except QueryError as exc:
        raise ValueError(
            f"not a fleet-indexing query: {exc} (the syntax of `aws iot search-index`; "
            "try it there first)"
        ) from None
    return value


#: A query is sent as queryString; past this, a campaign file is almost surely wrong.
MAX_QUERY: Final = 2048
Query = Annotated[str, Field(min_length=1, max_length=MAX_QUERY)]
#: Fields a sample is stratified by: an attribute, or a named shadow's reported/desired value.
_STRATUM_FIELD = (
    r"^(attributes\.[A-Za-z0-9_.,@/:#-]{1,128}"
    r"|shadow\.name\.[a-zA-Z0-9:_-]{1,64}\.(reported|desired)\.[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*)$"
)


class SampleModel(_Model):
    count: Count = Field(description="Devices in the sample (all of them when fewer match).")
    stratify_by: str = Field(
        max_length=400,
        pattern=_STRATUM_FIELD,
        description="attributes.NAME or shadow.name.SHADOW.reported.PATH: each value is a "
        "stratum, sampled in proportion to its size, at least one device each when count "
        "allows.",
    )
    query: Query | None = Field(
        None,
        description="Fleet-indexing query of the population to sample (default: every "
        "indexed thing); earlier waves' devices are left out.",
    )

    @field_validator("query")
    @classmethod
    def _query_parses(cls, value: str | None) -> str | None:
        return value if value is None else _fleet_query(value)


class WaveModel(_Model):
    name: Name
    region: str | None = Field(
        None,
        pattern=_REGION,
        max_length=32,
        description="The AWS region of this wave's thing groups and job (default: the "
        "campaign's region). Each region's documents name its own iot:Data-ATS endpoint.",
    )
    thing_groups: list[Annotated[str, Field(pattern=_GROUP)]] = Field(
        default_factory=list,
        max_length=100,
        description="Thing groups the wave's job targets (with query or sample, or alone).",
    )
    query: Query | None = Field(
        None,
        description="Fleet-indexing query: the campaign creates a dynamic thing group of the "
        "matching things (earlier waves' devices left out) and targets it.",
    )
    sample: SampleModel | None = Field(
        None,
        description="A stratified sample the campaign puts in a static group it owns.",
    )
    gate: GateModel
    rollout: RolloutModel = RolloutModel()
    approval: Literal["auto", "manual"] = "auto"
    deadline_minutes: float | None = Field(
        None,
        gt=0,
        le=MAX_MINUTES,
        description="After this, devices still QUEUED are counted as never started (at most "
        "two years).",
    )
    offline: Literal["ignore", "block"] = Field(
        "ignore", description="Whether never-started devices block promotion at the deadline."
    )
    execution: ExecutionModel | None = None
    max_failure_rate: Fraction | None = None
    maintenance_windows: list[WindowModel] = Field(default_factory=list, max_length=10)
    device_runtime: Runtime | None = Field(
        None, description="What runs the job on this wave's devices (default: the campaign's)."
    )
    device_client: DeviceClientModel | None = Field(
        None, description="This wave's Device Client settings (default: the campaign's)."
    )

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str | None) -> str | None:
        return None if value is None else checked_region(value)

    @field_validator("query")
    @classmethod
    def _query_parses(cls, value: str | None) -> str | None:
        return value if value is None else _fleet_query(value)

    @model_validator(mode="after")
    def _some_target(self) -> WaveModel:
        if not self.thing_groups and self.query is None and self.sample is None:
            raise ValueError("give thing_groups, query or sample: the devices the wave targets")
        if self.query is not None and self.sample is not None:
            raise ValueError(
                "give query or sample, not both; to sample from the devices a query matches, "
                "write it as sample.query"
            )
        made = (self.query is not None) + (self.sample is not None)
        if len(self.thing_groups) + made > 100:  # noqa: PLR2004 - CreateJob's targets limit
            raise ValueError(
                f"{len(self.thing_groups)} thing groups and the campaign's own group are more "
                "than the 100 targets CreateJob takes"
            )
        return self


class CampaignFile(_Model):
    """A campaign file, as operators write it."""

    name: Name
    region: str = Field(pattern=_REGION, max_length=32)
    endpoint: str = Field(
        "auto",
        max_length=253,
        pattern=r"^(auto|[a-z0-9][a-z0-9.-]*[a-z0-9])$",
        description="'auto' (DescribeEndpoint iot:Data-ATS) or an explicit host.",
    )
    catalog: str | None = Field(
        None,
        max_length=4096,
        description="A catalog file to take roots from instead of the packaged one.",
    )
    endpoint_port: Literal[8883, 443] = Field(
        8883,
        description="Port devices connect to: 8883, or 443 (MQTT with ALPN x-amzn-mqtt-ca).",
    )
    trust: TrustModel
    signing: SigningModel | None = Field(
        None, description="Sign every document: a key file or an AWS KMS key, and its key id."
    )
    execution: ExecutionModel = ExecutionModel()
    halt: HaltModel = HaltModel()
    device_runtime: Runtime = Field(
        "agent",
        description="What runs the job on the devices: 'agent' (the ca-migration/1 document) "
        "or 'device-client' (AWS IoT Device Client: a runHandler document that embeds it).",
    )
    device_client: DeviceClientModel | None = Field(
        None, description="Where the handler and its files are on Device Client devices."
    )
    waves: list[WaveModel] = Field(min_length=1, max_length=50)

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        return checked_region(value)

    def to_spec(self, base_dir: Path | None = None) -> CampaignSpec:
        catalog = self.catalog
        if catalog is not None and base_dir is not None and not Path(catalog).is_absolute():
            catalog = str((base_dir / catalog).resolve())
        signing = None
        if self.signing is not None:
            key_file = self.signing.key_file
            if key_file is not None and base_dir is not None and not Path(key_file).is_absolute():
                key_file = str((base_dir / key_file).resolve())
            signing = SigningSpec(
                key_id=self.signing.key_id, key_file=key_file, kms_key=self.signing.kms_key
            )
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
            signing=signing,
            endpoint_port=self.endpoint_port,
            device_runtime=DeviceRuntime(self.device_runtime),
            device_client=None if self.device_client is None else self.device_client.to_settings(),
            waves=tuple(_wave(w) for w in self.waves),
        )


def _wave(w: WaveModel) -> WaveSpec:
    exp = w.rollout.exponential
    return WaveSpec(
        name=w.name,
        thing_groups=tuple(w.thing_groups),
        query=w.query,
        sample=None
        if w.sample is None
        else SampleSpec(
            count=w.sample.count, stratify_by=w.sample.stratify_by, query=w.sample.query
        ),
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
        device_runtime=runtime(w.device_runtime),
        device_client=None if w.device_client is None else w.device_client.to_settings(),
        region=w.region,
    )


#: Validated campaign files by text: a stored campaign's text never changes.
_PARSED: dict[str, CampaignFile] = {}
_PARSED_KEEP: Final = 8


def _validated(text: str, source: str) -> CampaignFile:
    cached = _PARSED.get(text)
    if cached is not None:
        return cached
    if len(text) > MAX_FILE_BYTES:
        raise SpecError(source, (SpecProblem("", too_large(len(text), "characters")),))
    data, marks, dupes = load_yaml(text, source)
    if not isinstance(data, Mapping):
        raise SpecError(
            source, (SpecProblem("", "a campaign file is a YAML mapping (name:, waves:, ...)"),)
        )
    try:
        model = CampaignFile.model_validate(data)
    except ValidationError as exc:
        problems = list(dupes)
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
            # pydantic names the failing branch of a union in loc; drop what the file lacks.
            loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
            where = locate(loc, marks)
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                message = "unknown key; check its spelling against docs/campaign.schema.json"
            elif err["type"] == "missing":
                message = "required key is missing"
            elif err["type"] == "value_error":
                message = message.removeprefix("Value error, ")
            problems.append(
                SpecProblem(
                    dotted(loc),
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
    dupes.extend(runtime_problems(model.device_runtime, model.device_client, model.waves, marks))
    dupes.extend(region_problems(model.region, model.endpoint, model.waves, marks))
    if dupes:
        raise SpecError(source, tuple(dupes))
    if len(_PARSED) >= _PARSED_KEEP:
        _PARSED.pop(next(iter(_PARSED)))
    _PARSED[text] = model
    return model


def parse_spec(text: str, source: str = "<campaign>", base_dir: Path | None = None) -> CampaignSpec:
    """Validate a campaign file's text; raise `SpecError` listing every problem."""
    spec = _validated(text, source).to_spec(base_dir)
    _check_effective_queries(spec, source)
    return spec


def _check_effective_queries(spec: CampaignSpec, source: str) -> None:
    """The queries sent to AWS (earlier waves' devices left out) must still parse."""
    problems: list[SpecProblem] = []
    for index, wave in enumerate(spec.waves):
        targets = wave_targets(spec, wave)
        sent = targets.query or (targets.sample.population if targets.sample else None)
        if sent is None:
            continue
        try:
            parse(sent)
        except QueryError as exc:
            key = "query" if wave.query is not None else "sample"
            problems.append(
                SpecProblem(
                    f"waves[{index}].{key}",
                    f"with the devices of the {index} earlier waves left out, the query sent "
                    f"to AWS is not valid ({exc}); shorten the queries or split the campaign",
                )
            )
    if problems:
        raise SpecError(source, tuple(problems))


def load_spec(path: Path) -> CampaignSpec:
    """Read and validate a campaign file."""
    return parse_spec(read_campaign_text(path), str(path), base_dir=path.parent)


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
