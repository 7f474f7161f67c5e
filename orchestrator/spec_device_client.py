"""The campaign file's `device_runtime` and `device_client` keys (campaign and wave).

A wave whose devices run AWS IoT Device Client gets a `runHandler` job document
(`orchestrator.device_client_docs`); these keys say where the handler and its
files are on those devices. Kept beside `orchestrator.spec`, which composes
them into the campaign and wave models.

Invariants:
- Every path is absolute on the device and free of control characters: it
  is handed to Device Client as one argument (no shell ever sees it).
- A wave that runs Device Client has settings (its own or the campaign's);
  a wave that gives settings runs Device Client. Both are checked after the
  file validates, with the line of the key at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.campaign_yaml import Marks, dotted
from orchestrator.errors import SpecProblem
from orchestrator.model import DeviceClientSettings, DeviceRuntime

__all__ = ["DeviceClientModel", "Runtime", "runtime", "runtime_problems"]

#: An absolute path on the device: no control characters (a newline would split a log line).
_DEVICE_PATH: Final = r"^/[^\x00-\x1f\x7f]*$"
#: A POSIX user name, as Device Client passes it to the handler (its first argument).
_USER: Final = r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$"

Runtime = Literal["agent", "device-client"]


class DeviceClientModel(BaseModel):
    """Where the handler and its files are on Device Client devices."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    handler_path: str = Field(
        max_length=4096,
        pattern=_DEVICE_PATH,
        description="The installed ca-migrate-handler.sh (absolute path on the device); the "
        "runHandler step names its directory (`path`) and file (`handler`).",
    )
    device_toml: str = Field(
        max_length=4096,
        pattern=_DEVICE_PATH,
        description="The handler's device.toml (absolute path on the device).",
    )
    config_path: str = Field(
        max_length=4096,
        pattern=_DEVICE_PATH,
        description="Device Client's JSON configuration (absolute path on the device): its "
        "`endpoint` is migrated with the endpoint file and trust bundle.",
    )
    allow_stderr: int = Field(
        0,
        ge=0,
        le=1000,
        description="The step's allowStdErr: lines of stderr Device Client tolerates (the "
        "handler writes none).",
    )
    run_as_user: str = Field(
        "root",
        pattern=_USER,
        description="The step's runAsUser (Device Client passes it as the handler's first "
        "argument).",
    )

    @field_validator("handler_path")
    @classmethod
    def _a_file(cls, value: str) -> str:
        if value.endswith("/") or value.rsplit("/", 1)[1] in {".", ".."}:
            raise ValueError(
                "handler_path names the handler script itself "
                "(/opt/ca-migrate/handlers/ca-migrate-handler.sh), not its directory"
            )
        return value

    def to_settings(self) -> DeviceClientSettings:
        return DeviceClientSettings(
            handler_path=self.handler_path,
            device_toml=self.device_toml,
            config_path=self.config_path,
            allow_stderr=self.allow_stderr,
            run_as_user=self.run_as_user,
        )


def runtime(value: Runtime | None) -> DeviceRuntime | None:
    return None if value is None else DeviceRuntime(value)


class _Wave(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def device_runtime(self) -> Runtime | None: ...
    @property
    def device_client(self) -> DeviceClientModel | None: ...


def runtime_problems(
    campaign_runtime: Runtime,
    campaign_settings: DeviceClientModel | None,
    waves: Sequence[_Wave],
    marks: Marks,
) -> list[SpecProblem]:
    """A Device Client wave without settings, or settings on a wave that runs the agent."""
    problems: list[SpecProblem] = []

    def at(loc: tuple[str | int, ...], message: str) -> None:
        where = marks.get(loc)
        problems.append(
            SpecProblem(
                dotted(loc),
                message,
                line=where[0] if where else None,
                column=where[1] if where else None,
            )
        )

    for index, wave in enumerate(waves):
        effective = wave.device_runtime or campaign_runtime
        if effective == "device-client":
            if wave.device_client is None and campaign_settings is None:
                loc: tuple[str | int, ...] = (
                    ("waves", index, "device_runtime")
                    if wave.device_runtime is not None
                    else ("device_runtime",)
                )
                at(
                    loc,
                    f"wave {wave.name!r} runs Device Client but no device_client settings "
                    "are given: add device_client: {handler_path, device_toml, config_path} "
                    "to the wave or the campaign",
                )
        elif wave.device_client is not None:
            at(
                ("waves", index, "device_client"),
                f"wave {wave.name!r} gives device_client settings but its devices run the "
                "agent: add device_runtime: device-client to the wave, or remove them",
            )
    return problems
