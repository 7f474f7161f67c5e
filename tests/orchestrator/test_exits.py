"""`orchestrator.cli.exits`: every command maps its errors to exit codes the same way."""

from __future__ import annotations

import pytest
import typer

from job_documents import JobDocumentError
from orchestrator.cli.exits import EXIT_FAILURE, EXIT_INVALID, exit_codes
from orchestrator.errors import (
    AwsError,
    CampaignNotFoundError,
    OrchestratorError,
    UnknownThingGroupError,
    UsageError,
)


class SandboxBrokeError(Exception):
    pass


class FleetFileError(Exception):
    pass


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UsageError("use --wave"), EXIT_INVALID),
        (CampaignNotFoundError("no campaign x"), EXIT_INVALID),
        (UnknownThingGroupError("no group g"), EXIT_INVALID),  # an AwsError, but the input's fault
        (JobDocumentError("bad document"), EXIT_INVALID),
        (FleetFileError("groups: missing"), EXIT_INVALID),
        (AwsError("throttled"), EXIT_FAILURE),
        (OrchestratorError("lost"), EXIT_FAILURE),
        (SandboxBrokeError("broker down"), EXIT_FAILURE),
    ],
)
def test_errors_become_a_message_and_their_exit_code(error, code, capsys) -> None:
    with (
        pytest.raises(typer.Exit) as caught,
        exit_codes(invalid=(FleetFileError,), failure=(SandboxBrokeError,)),
    ):
        raise error
    assert caught.value.exit_code == code
    assert capsys.readouterr().err == f"error: {error}\n"


def test_an_error_of_no_known_kind_is_not_swallowed() -> None:
    with pytest.raises(KeyError), exit_codes():
        raise KeyError("a bug stays a bug")
