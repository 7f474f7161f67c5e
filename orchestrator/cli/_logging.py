"""Logging set-up for `ca-migrate`: the application configures structlog, libraries never."""

from __future__ import annotations

import logging
import sys
from typing import Literal

from job_documents import logs

LogFormat = Literal["json", "console", "auto"]


def configure_logging(fmt: LogFormat = "auto", level: int | None = logging.INFO) -> None:
    """Events go to stderr: JSON when not on a terminal (or asked for), readable otherwise.

    `level=None` picks by audience: a person at a terminal sees warnings and errors
    only (the command's own output says what happened; `-v` shows the rest), a
    machine reading JSON gets every info event.
    """
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    if level is None:
        level = logging.INFO if use_json else logging.WARNING
    logs.configure_logging(json=use_json, level=level)
