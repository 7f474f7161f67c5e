"""`ca-migrate demo` piped (not a terminal) says what happens as it happens, in plain lines.

A real `ca-migrate` process with its output on pipes, as under `make demo | tee` or CI.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

FAST = ("--devices", "50", "--time-scale", "0")


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "demo", *FAST, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_piped_text_output_prints_one_plain_line_per_phase_change() -> None:
    run = _demo()
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "demo happy: starting"
    assert "t+0 min campaign demo RUNNING; canary LAUNCHING" in lines
    assert any(line.endswith("canary PASSED; wave-1 LAUNCHING") for line in lines), lines
    assert any("campaign demo COMPLETED" in line for line in lines), lines
    # each change once: wave-1 launches on one line only
    assert sum("wave-1 LAUNCHING" in line for line in lines) == 1
    assert "\x1b" not in run.stdout  # no terminal redraw codes


def test_piped_halt_line_gives_the_reason_once() -> None:
    run = _demo("--scenario", "bad-canary")
    assert run.returncode == 0, run.stderr
    halt = [line for line in run.stdout.splitlines() if "campaign demo HALTED" in line]
    assert len(halt) == 1, run.stdout
    assert halt[0].count("max_failure_rate") == 1
    assert "canary HALTED: " in halt[0]


def test_json_output_keeps_stdout_to_the_json_and_progress_on_stderr() -> None:
    run = _demo("--output", "json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1])["status"] == "COMPLETED"
    assert "t+" not in run.stdout
    assert "canary PASSED; wave-1 LAUNCHING" in run.stderr
    assert "\x1b" not in run.stderr
