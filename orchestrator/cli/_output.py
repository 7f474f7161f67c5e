"""Where and how `ca-migrate` commands print: one convention for every command.

`-o/--output FORMAT` is the format of what a command prints (`text` or `json`,
as in the AWS CLI and kubectl); `--output-file PATH` is where a command that
writes a file writes it. A path given to `-o` (the old spelling on `report` and
`document build`) is refused with exit 2 naming `--output-file`, never taken
as a format or silently written under the format's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.errors import UsageError

__all__ = ["OutputFileOption", "OutputOption", "output_format", "write_output_file"]

OutputOption = Annotated[
    str, typer.Option("--output", "-o", help="Format of what is printed: text or json.")
]
OutputFileOption = Annotated[
    Path | None, typer.Option("--output-file", help="Write to this file instead of stdout.")
]


def output_format(value: str, allowed: tuple[str, ...] = ("text", "json")) -> str:
    """The format `-o/--output` names; `UsageError` (exit 2) for anything else."""
    chosen = value.lower()
    if chosen in allowed:
        return chosen
    hint = ""
    if "." in value or "/" in value:
        hint = f"; to write a file, use --output-file {value}"
    raise UsageError(
        f"-o/--output is the format of what is printed ({', '.join(allowed)}), not {value!r}{hint}"
    )


def write_output_file(path: Path, text: str) -> None:
    """Write `text` to `path`; an unwritable path is `UsageError` (exit 2), not a traceback."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(
            f"cannot write --output-file {path}: {reason}; give a path in a writable directory"
        ) from exc
