"""The one structlog set-up, for the programs (CLIs, the Lambda handler, fleet workers).

Libraries never call this: the program that owns the process does, once, like
its garbage-collector settings. Events go to a stream (standard error unless
told), one write per event, newline included: worker processes that share the
stream would otherwise interleave their lines.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

__all__ = ["configure_logging"]


def configure_logging(
    *,
    json: bool = True,
    level: int = logging.INFO,
    stream: TextIO | None = None,
    sort_keys: bool = False,
) -> None:
    """Log events as JSON lines (or readable console lines) at `level` and above.

    `stream` None means standard error, resolved at every event rather than once:
    test runners and embedding applications swap (and close) `sys.stderr`.
    """
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(sort_keys=sort_keys)
        if json
        else structlog.dev.ConsoleRenderer()
    )

    def logger_factory(*_args: object) -> structlog.WriteLogger:
        return structlog.WriteLogger(file=sys.stderr if stream is None else stream)

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
        logger_factory=logger_factory,
        cache_logger_on_first_use=False,
    )
