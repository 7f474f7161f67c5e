"""The skip policy: under CI a skip for anything but a machine lack fails the run."""

from __future__ import annotations

import pytest

from tests.skip_policy import allowed

OWN_MODULE_SKIP = """
import pytest

runtime = pytest.importorskip("infra.sandbox.no_such_module")


def test_never_runs():
    assert runtime
"""

MACHINE_SKIP = """
import pytest


@pytest.mark.skipif(True, reason="mosquitto is not installed")
def test_needs_a_broker():
    raise AssertionError


def test_runs():
    assert 1 + 1 == 2
"""

RENAMED_SKIP = """
import pytest


def test_adapter():
    pytest.skip("the adapter makes no self._iot calls yet")
"""

XFAIL = """
import pytest


@pytest.mark.xfail(reason="known to be broken")
def test_broken():
    raise AssertionError
"""


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str, ci: str | None):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makepyfile(test_subject=source)
    return pytester.runpytest_inprocess("-p", "tests.skip_policy", "-p", "no:cacheprovider")


@pytest.mark.parametrize("source", [OWN_MODULE_SKIP, RENAMED_SKIP, XFAIL])
def test_a_skip_for_our_own_code_fails_the_run_under_ci(pytester, monkeypatch, source):
    result = _run(pytester, monkeypatch, source, "true")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skip policy*", "*fails the run under CI*", "*test_subject*"])


@pytest.mark.parametrize("source", [OWN_MODULE_SKIP, RENAMED_SKIP])
def test_outside_ci_the_same_skip_is_reported_but_passes(pytester, monkeypatch, source):
    result = _run(pytester, monkeypatch, source, None)
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
    result.stdout.fnmatch_lines(["*would fail the run under CI*"])


def test_a_skip_for_what_the_machine_lacks_is_allowed_under_ci(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, MACHINE_SKIP, "true")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1)
    assert "skip policy" not in result.stdout.str()


def test_ci_false_does_not_enforce(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, RENAMED_SKIP, "false")
    assert result.ret == pytest.ExitCode.OK


@pytest.mark.parametrize(
    ("reason", "ok"),
    [
        ("mosquitto is not installed", True),
        ("git is not installed", True),
        ("a1-ats.iot.us-east-1.amazonaws.com does not resolve to 127.0.0.1", True),
        ("the SDK resolves the sandbox's AWS-shaped names only under nss_wrapper", True),
        ("could not import 'infra.sandbox.runtime': No module named 'infra'", False),
        ("orchestrator.runner_lambda is not written yet", False),
        ("job_documents.load_catalog is not available yet", False),
    ],
)
def test_allowed_reasons_are_machine_lacks_only(reason, ok):
    assert allowed(reason) is ok
