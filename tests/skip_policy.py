"""Skips may only say what the machine lacks; under CI any other skip fails the run.

A skip turns a test green without running it. The project's own modules are
never optional, so a skip because one of them moved, was renamed or failed to
import would hide exactly the regression the test exists to catch. Only the
reasons in `MACHINE_LACKS` (a program or the name resolution the environment
provides) may skip; with `CI` set (as CI sets it) every other skip or xfail is
listed and the run exits non-zero. Outside CI the same list is printed as a
warning, so a developer sees it before CI does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import pytest

#: What a machine may lack, by the words of the skip reason. Add a pattern only for
#: something outside this repository (a program, a system library, the network).
MACHINE_LACKS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\bmosquitto is not installed\b"),
    re.compile(r"\bgit is not installed\b"),
    re.compile(r"\bupdate-ca-certificates is not installed\b"),
    re.compile(r"does not resolve to 127\.0\.0\.1"),
    re.compile(r"\bnss_wrapper\b"),
    # A port another program holds (8883, 443), or a machine without privileged ports.
    re.compile(r"\bcannot be bound here\b"),
    re.compile(r"\bhas no privileged ports\b"),
    # A checkout of aws-iot-device-sdk-python-v2 (CA_MIGRATE_SDK_SAMPLES) to run its samples.
    re.compile(r"\bthe AWS IoT Device SDK v2 samples are not here\b"),
)
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class Skipped:
    nodeid: str
    reason: str


def enforced() -> bool:
    """True under CI (`CI=true`, as CI sets it)."""
    return os.environ.get("CI", "").strip().lower() in _TRUE


def allowed(reason: str) -> bool:
    """Whether a skip reason names something the machine lacks."""
    return any(pattern.search(reason) for pattern in MACHINE_LACKS)


def _reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    wasxfail = getattr(report, "wasxfail", None)
    if wasxfail is not None:
        return f"xfail: {wasxfail}"
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


class SkipPolicy:
    """Collects every skip (collection or test) and judges it at the end of the session."""

    def __init__(self) -> None:
        self.refused: list[Skipped] = []

    def _record(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if not report.skipped:
            return
        reason = _reason(report)
        if getattr(report, "wasxfail", None) is not None or not allowed(reason):
            self.refused.append(Skipped(report.nodeid, reason))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.refused:
            return
        verdict = "fails the run under CI" if enforced() else "would fail the run under CI"
        terminalreporter.section("skip policy", sep="=", red=True, bold=True)
        terminalreporter.line(
            f"{len(self.refused)} skipped for a reason that is not a machine lack ({verdict}); "
            "import the project's modules directly and let failures fail "
            "(allowed reasons: tests/skip_policy.py MACHINE_LACKS):"
        )
        for skipped in self.refused:
            terminalreporter.line(f"  {skipped.nodeid}: {skipped.reason}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.refused and enforced() and session.exitstatus in (0, 5):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipPolicy(), "ca-migrate-skip-policy")
