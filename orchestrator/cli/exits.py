"""Exit codes of `ca-migrate` and the one mapping from errors to them.

0 ok; 2 invalid input (a campaign or fleet file, an unknown campaign or wave, a
command that does not apply now, a bad option), told on stderr with what to do;
1 anything else the command could not do. Never a traceback for either.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import typer

from job_documents import JobDocumentError
from orchestrator.errors import (
    CampaignExistsError,
    CampaignNotFoundError,
    OrchestratorError,
    SpecError,
    UnknownThingGroupError,
    UsageError,
)

__all__ = ["EXIT_FAILURE", "EXIT_INVALID", "EXIT_OK", "INVALID_INPUT", "exit_codes"]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_INVALID: Final = 2
#: Errors that mean the input was wrong: the user fixes it and runs again.
INVALID_INPUT: Final[tuple[type[Exception], ...]] = (
    SpecError,
    UsageError,
    CampaignNotFoundError,
    CampaignExistsError,
    UnknownThingGroupError,
    JobDocumentError,
)


@contextmanager
def exit_codes(
    *,
    invalid: tuple[type[Exception], ...] = (),
    failure: tuple[type[Exception], ...] = (),
) -> Iterator[None]:
    """Turn the errors of a command into `error: ...` on stderr and its exit code.

    `invalid` and `failure` add a command's own error types (the sandbox's, say)
    to `INVALID_INPUT` and `OrchestratorError`.
    """
    wrong: tuple[type[Exception], ...] = (*INVALID_INPUT, *invalid)
    failed: tuple[type[Exception], ...] = (OrchestratorError, *failure)
    try:
        yield
    except wrong as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_INVALID) from exc
    except failed as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILURE) from exc
