"""Logging set-up for `ca-migrate`: the application configures structlog, libraries never."""

from __future__ import annotations

import logging
import sys
from typing import Literal

from job_documents import logs

LogFormat = Literal["json", "console", "auto"]


def configure_logging(fmt: LogFormat = "auto", level: int = logging.INFO) -> None:
    """Events go to stderr: JSON when not on a terminal (or asked for), readable otherwise."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    logs.configure_logging(json=use_json, level=level)
