"""Logging set-up for `ca-migrate`: the application configures structlog, libraries never."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["json", "console", "auto"]


def _stderr_logger(*_args: object) -> structlog.WriteLogger:
    # Resolve sys.stderr on every use, not once: test runners and embedding
    # applications swap (and close) it, and a stale handle would break logging.
    # One write per event, newline included: the fleet's worker processes share this
    # stderr, and separate writes of text and newline would interleave their lines.
    return structlog.WriteLogger(file=sys.stderr)


def configure_logging(fmt: LogFormat = "auto", level: int | None = logging.INFO) -> None:
    """Events go to stderr: JSON when not on a terminal (or asked for), readable otherwise.

    `level=None` picks by audience: a person at a terminal sees warnings and errors
    only (the command's own output says what happened; `-v` shows the rest), a
    machine reading JSON gets every info event.
    """
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    if level is None:
        level = logging.INFO if use_json else logging.WARNING
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
