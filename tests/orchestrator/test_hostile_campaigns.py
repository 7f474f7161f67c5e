"""Hostile campaign files: `plan` refuses each with exit 2 and a located message.

Never a traceback, never a hang, never memory that grows with what the file
claims: the memory bound is proven in a child process whose address space is
capped (`resource.setrlimit`), so a regression dies there with MemoryError
instead of taking the machine with it.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from orchestrator import campaign_yaml
from orchestrator import spec as spec_module
from orchestrator.errors import SpecError
from orchestrator.spec import MAX_FILE_BYTES, load_spec, parse_spec

from .conftest import README_CAMPAIGN

ROOT = Path(__file__).resolve().parents[2]

ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


def _with(old: str, new: str) -> bytes:
    assert old in README_CAMPAIGN
    return README_CAMPAIGN.replace(old, new, 1).encode()


WINDOW = '    maintenance_windows: [{start: "CRON", duration_minutes: 60}]\n'

# name -> (file bytes, what stderr must say)
HOSTILE: dict[str, tuple[bytes, str]] = {
    "alias-bomb": (ALIAS_BOMB.encode(), "line 1: anchor &a refused"),
    "alias-inside-campaign": (
        _with("  add: [amazon-root-ca-1, amazon-root-ca-3]", "  add: &r [amazon-root-ca-1]")
        + b"x: *r\n",
        "line 5: anchor &r refused",
    ),
    "merge-key": (
        _with("  keep_existing: true", "  <<: {keep_existing: false}"),
        "line 6 (trust.<<): merge keys (<<) are refused",
    ),
    "explicit-tag": (_with("bake_minutes: 10", "bake_minutes: !!float 10"), "line 16: tag"),
    "python-tag": (_with("name: ats-2026", "name: !!python/object:os.system x"), "line 1: tag"),
    "duplicate-key": (
        _with("  keep_existing: true", "  keep_existing: true\n  keep_existing: false"),
        "line 7 (trust.keep_existing): key given twice",
    ),
    "bake-inf": (
        _with("bake_minutes: 10", "bake_minutes: .inf"),
        "line 16 (waves[0].gate.bake_minutes): Input should be a finite number",
    ),
    "bake-1e300": (
        _with("bake_minutes: 10", "bake_minutes: 1e300"),
        "line 16 (waves[0].gate.bake_minutes): Input should be less than or equal to 1051200",
    ),
    "bake-nan": (_with("bake_minutes: 10", "bake_minutes: .nan"), "finite number"),
    "deadline-inf": (
        _with("    approval: manual", "    approval: manual\n    deadline_minutes: .inf"),
        "waves[1].deadline_minutes): Input should be a finite number",
    ),
    "budget-huge": (
        _with("fleet_failure_budget: 200", "fleet_failure_budget: 99999999999999999999"),
        "line 12 (halt.fleet_failure_budget): Input should be less than or equal to 2147483647",
    ),
    "integer-of-5000-digits": (
        _with("bake_minutes: 10", "bake_minutes: " + "9" * 5000),
        "a value cannot be read (Exceeds the limit (4300 digits)",
    ),
    "impossible-date": (
        _with("bake_minutes: 10", "bake_minutes: 2026-02-30"),
        "a value cannot be read (day is out of range for month)",
    ),
    "timeout-past-aws-limit": (
        _with("in_progress_timeout_minutes: 30", "in_progress_timeout_minutes: 10081"),
        (
            "line 8 (execution.in_progress_timeout_minutes): Input should be less than or equal "
            "to 10080"
        ),
    ),
    "rate-past-aws-limit": (
        _with("maximum_per_minute: 100", "maximum_per_minute: 1001"),
        "(waves[1].rollout.maximum_per_minute): Input should be less than or equal to 1000",
    ),
    "retries-past-aws-limit-in-all": (
        _with("retries: {failed: 1, timed_out: 1}", "retries: {failed: 6, timed_out: 5}"),
        "add up to 11; AWS allows at most 10 in all",
    ),
    "retries-past-aws-limit": (
        _with("retries: {failed: 1", "retries: {failed: 11"),
        "line 9 (execution.retries.failed)",
    ),
    "increment-factor-two-decimals": (
        _with(
            "    rollout: {maximum_per_minute: 100}",
            "    rollout: {exponential: {base_rate_per_minute: 5, increment_factor: 1.55, "
            "notified_things: 10}}",
        ),
        "at most one digit after the decimal point",
    ),
    "cron-hour-25": (
        README_CAMPAIGN.encode() + WINDOW.replace("CRON", "cron(0 25 ? * * *)").encode(),
        (
            "line 25 (waves[2].maintenance_windows[0].start): not an AWS cron expression: "
            "'25' in hours is outside 0-23"
        ),
    ),
    "cron-five-fields": (
        README_CAMPAIGN.encode() + WINDOW.replace("CRON", "cron(0 2 * * *)").encode(),
        "six fields",
    ),
    "cron-two-question-marks": (
        README_CAMPAIGN.encode() + WINDOW.replace("CRON", "cron(0 2 ? * ? *)").encode(),
        "put ? in exactly one of day-of-month",
    ),
    "cron-not-cron": (
        README_CAMPAIGN.encode() + WINDOW.replace("CRON", "rate(5 minutes)").encode(),
        "write it as cron(minutes hours",
    ),
    "unknown-region": (
        _with("region: us-east-1", "region: zz-fake-9"),
        "line 2 (region): 'zz-fake-9' is not an AWS region",
    ),
    "isolated-region": (
        _with("region: us-east-1", "region: us-iso-east-1"),
        "isolated partitions are not supported",
    ),
    "nested-500-deep": (b"[" * 500 + b"]" * 500, "line 1: nested more than 32 levels deep"),
    "mapping-nested-100-deep": (
        "".join(f"{'  ' * i}k{i}:\n" for i in range(100)).encode(),
        "line 32: nested more than 32 levels deep",
    ),
    "utf16-bom": (
        b"\xff\xfe" + "name: x\n".encode("utf-16-le"),
        "line 1: the file is UTF-16 text",
    ),
    "utf32-bom": (b"\xff\xfe\x00\x00n\x00\x00\x00", "line 1: the file is UTF-32 text"),
    "invalid-utf8": (
        _with("region: us-east-1", "region: us-east-\xff1").replace(b"\xc3\xbf", b"\xff"),
        "line 2: byte 0xff is not UTF-8 text; save the file as UTF-8",
    ),
    "nul-character": (_with("name: ats-2026", "name: ats\x00"), "is not allowed in YAML"),
    "not-a-mapping": (b"- just\n- a list\n", "a campaign file is a YAML mapping"),
    "empty": (b"", "a campaign file is a YAML mapping"),
    "unhashable-key": (README_CAMPAIGN.encode() + b"? [a, b]\n: 3\n", "found unhashable key"),
    "over-1-mib": (b"#" * (MAX_FILE_BYTES + 1), "the file is over 1,048,576 bytes"),
}


@pytest.fixture(autouse=True)
def _no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every case must be refused before any AWS call: an unreachable endpoint proves it.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "none")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "none")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _plan(*args: str) -> tuple[int, str, BaseException | None]:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    result = CliRunner().invoke(app, [*args])
    structlog.reset_defaults()  # the CLI configured logging for its run; undo it
    exception = result.exception if not isinstance(result.exception, SystemExit) else None
    return result.exit_code, result.stdout + result.stderr, exception


LOADERS = {loader.__name__: loader for loader in campaign_yaml._LOADERS}


@pytest.fixture(params=sorted(LOADERS))
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each YAML event source the loader can run on (libyaml when PyYAML has it, and Python)."""
    monkeypatch.setattr(campaign_yaml, "_LOADERS", (LOADERS[request.param],))
    spec_module._PARSED.clear()
    return str(request.param)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_plan_refuses_a_hostile_campaign_file_with_exit_2_and_the_line(
    case: str, loader: str, tmp_path: Path
) -> None:
    raw, expected = HOSTILE[case]
    path = tmp_path / "campaign.yaml"
    path.write_bytes(raw)
    code, output, exception = _plan("--endpoint-url", "http://127.0.0.1:9", "plan", str(path))
    assert exception is None, output
    assert code == 2, output
    assert "Traceback" not in output
    assert expected in output, output


def test_hostile_files_stay_within_a_capped_address_space(tmp_path: Path) -> None:
    """All cases in one child whose address space is capped at 1 GiB: exit 2 each time."""
    cases = {}
    for name, (raw, _expected) in HOSTILE.items():
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(raw)
        cases[name] = str(path)
    child = textwrap.dedent(
        """
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from typer.testing import CliRunner
        from orchestrator.cli import app
        out = {}
        for name, path in json.loads(sys.argv[1]).items():
            r = CliRunner().invoke(app, ["--endpoint-url", "http://127.0.0.1:9", "plan", path])
            bad = r.exception if not isinstance(r.exception, SystemExit) else None
            out[name] = [r.exit_code, type(bad).__name__ if bad else None]
        print(json.dumps(out))
        """
    )
    env = dict(os.environ, AWS_ACCESS_KEY_ID="none", AWS_SECRET_ACCESS_KEY="none")
    done = subprocess.run(
        [sys.executable, "-c", child, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results == {name: [2, None] for name in HOSTILE}


def test_a_50_mb_campaign_file_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)  # sparse: 50 MB of NUL bytes
    tracemalloc.start()
    try:
        with pytest.raises(SpecError, match="over 1,048,576 bytes"):
            load_spec(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_FILE_BYTES


def test_the_alias_bomb_is_refused_before_anything_grows() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(SpecError, match="anchor &a refused"):
            parse_spec(ALIAS_BOMB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_a_control_character_is_reported_on_its_line_by_either_loader(loader: str) -> None:
    text = README_CAMPAIGN.replace("  add: [", "  add: [\x07", 1)  # line 5
    text = "# caf\u00e9 \u00e9t\u00e9\n" + text  # non-ASCII before it: libyaml counts bytes
    with pytest.raises(SpecError, match=r"line 6: .* is not allowed in YAML; remove it"):
        parse_spec(text)


def test_a_valid_file_gives_the_same_spec_with_either_loader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    specs = []
    for loader in LOADERS.values():
        monkeypatch.setattr(campaign_yaml, "_LOADERS", (loader,))
        spec_module._PARSED.clear()
        specs.append(parse_spec(README_CAMPAIGN))
    assert specs[0].waves[1].rollout.maximum_per_minute == 100
    assert all(spec == specs[0] for spec in specs)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "campaign.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + README_CAMPAIGN.encode())
    assert load_spec(path).name == "ats-2026"


def test_a_stored_campaign_is_parsed_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    text = README_CAMPAIGN + "# parsed once\n"
    calls: list[str] = []
    real = spec_module.load_yaml

    def counting(text: str, source: str) -> Any:
        calls.append(source)
        return real(text, source)

    monkeypatch.setattr(spec_module, "load_yaml", counting)
    first = parse_spec(text, "campaign ats-2026")
    again = parse_spec(text, "campaign ats-2026", base_dir=Path("/elsewhere"))
    assert calls == ["campaign ats-2026"]
    assert first.waves == again.waves
    with pytest.raises(SpecError):
        parse_spec(text.replace("ats-2026", "bad name"))
    with pytest.raises(SpecError):  # failures are not kept: each is reported again
        parse_spec(text.replace("ats-2026", "bad name"))
    assert len(calls) == 3


# -- generated campaign files through `plan`, against the sandbox -------------------------------

GROUPS = ("canary", "fleet-a", "fleet-b", "fleet-c")

_hostile_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 10, 1430, 1431, 10080, 10081, 2**31, 1e300, -1e-300]),
)
_hostile_values = st.one_of(
    _hostile_numbers,
    st.none(),
    st.booleans(),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A valid value nine times in ten, else anything hostile: most files get past one field."""
    return st.integers(0, 9).flatmap(lambda roll: valid if roll else _hostile_values)


_cron = st.one_of(
    st.sampled_from(["cron(0 2 ? * * *)", "cron(30 22 ? * SAT *)", "cron(0 2 L * ? *)"] * 3),
    st.builds(
        lambda fields: f"cron({' '.join(fields)})",
        st.lists(
            st.sampled_from(
                ["0", "59", "60", "*", "?", "L", "3W", "6#3", "1-5", "0/15", "JAN", "X"]
            ),
            min_size=4,
            max_size=7,
        ),
    ),
    st.text(max_size=30),
)


def _gate() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"min_success_rate": _mostly(st.floats(0, 1))},
        optional={
            "min_completed": _mostly(st.integers(1, 2**31 - 1)),
            "bake_minutes": _mostly(st.floats(0, 1051200)),
            "confidence": _mostly(st.floats(0.51, 0.99)),
            "min_completed_fraction": _mostly(st.floats(0, 1)),
        },
    )


def _wave(index: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "name": st.just(f"w{index}"),
            "thing_groups": st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2),
            "gate": _gate(),
        },
        optional={
            "deadline_minutes": _mostly(st.floats(1, 1051200)),
            "rollout": st.fixed_dictionaries(
                {},
                optional={
                    "maximum_per_minute": _mostly(st.integers(1, 1000)),
                    "exponential": st.fixed_dictionaries(
                        {
                            "base_rate_per_minute": _mostly(st.integers(1, 1000)),
                            "increment_factor": _mostly(st.integers(11, 50).map(lambda t: t / 10)),
                            "notified_things": _mostly(st.integers(1, 2**31 - 1)),
                        }
                    ),
                },
            ),
            "execution": st.fixed_dictionaries(
                {},
                optional={
                    "in_progress_timeout_minutes": _mostly(st.integers(1, 10080)),
                    "retries": st.fixed_dictionaries(
                        {
                            "failed": _mostly(st.integers(0, 10)),
                            "timed_out": _mostly(st.integers(0, 10)),
                        }
                    ),
                },
            ),
            "maintenance_windows": st.lists(
                st.fixed_dictionaries(
                    {"start": _cron, "duration_minutes": _mostly(st.integers(1, 1430))}
                ),
                max_size=2,
            ),
            "approval": st.sampled_from(["auto"] * 4 + ["manual", "later"]),
        },
    )


_campaigns = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["gen"] * 8 + ["bad name", ""]),
        "region": st.sampled_from(["us-east-1"] * 8 + ["zz-fake-9", "us-east-1\n"]),
        "trust": st.fixed_dictionaries({"add": st.just(["amazon-root-ca-1"])}),
        "waves": st.integers(min_value=1, max_value=3).flatmap(
            lambda n: st.tuples(*(_wave(i) for i in range(n))).map(list)
        ),
    },
    optional={
        "halt": st.fixed_dictionaries(
            {},
            optional={
                "max_failure_rate": _mostly(st.floats(0, 1)),
                "fleet_failure_budget": _mostly(st.integers(0, 2**31 - 1)),
                "min_executed": _mostly(st.integers(1, 2**31 - 1)),
            },
        ),
        "endpoint": st.sampled_from(["auto", "a1b2c3-ats.iot.us-east-1.amazonaws.com", "x" * 300]),
    },
)


def _text_of(campaign: dict[str, Any]) -> str:
    # PyYAML writes NaN and the infinities as .nan/.inf, the spelling an operator would use.
    return yaml.safe_dump(campaign, sort_keys=False, allow_unicode=True)


_RSS_AT_START = [0]  # KiB, set when the sandbox starts


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    from infra.sandbox import runtime

    _RSS_AT_START[0] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with runtime.Sandbox(mqtt=False) as sb:
        sb.provision(8, [(g, 2) for g in GROUPS])
        yield sb.control_plane_url


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    campaign=_campaigns,
    garble=st.integers(0, 4).flatmap(
        lambda roll: st.none() if roll else st.tuples(st.integers(0, 2000), st.binary(max_size=4))
    ),
)
def test_generated_campaign_files_give_exit_0_or_2_never_a_traceback(
    campaign: dict[str, Any],
    garble: tuple[int, bytes] | None,
    sandbox_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    raw = _text_of(campaign).encode()
    if garble is not None:  # a few stray bytes somewhere: encodings, syntax, truncation
        at, junk = garble
        raw = raw[:at] + junk + raw[at:]
    path = tmp_path_factory.mktemp("gen") / "campaign.yaml"
    path.write_bytes(raw)
    # the sandbox serves no MQTT listener: its endpoint could only be found unreachable
    code, output, exception = _plan(
        "--endpoint-url", sandbox_url, "plan", str(path), "--skip-endpoint-check"
    )
    assert exception is None, f"{exception!r}\n{output}"
    event(f"exit {code}")
    assert code in (0, 2), output
    assert "Traceback" not in output
    if code == 2:
        assert "error:" in output
    # The process's high-water mark (tracemalloc would make this test six times slower):
    # no generated file may have grown it by more than 256 MiB over where the test began.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < _RSS_AT_START[0] + 256 * 1024
    if code == 0:  # what passed is finite and within bounds the planner can add to a datetime
        spec = load_spec(path)
        for wave in spec.waves:
            assert math.isfinite(wave.gate.bake_minutes)
            assert wave.gate.bake_minutes <= spec_module.MAX_MINUTES
            assert wave.deadline_minutes is None or math.isfinite(wave.deadline_minutes)


# -- a CreateJob that the sandbox refuses ----------------------------------------------------------


def test_start_with_a_window_the_sandbox_refuses_halts_and_exits_2(
    sandbox_url: str, tmp_path: Path
) -> None:
    """`cron(0 2 L * ? *)` is AWS syntax (plan accepts it); the sandbox's CreateJob refuses
    L, so the first CreateJob fails as an invalid request: start stops, it does not hang."""
    from orchestrator.model import CampaignStatus, WavePhase
    from orchestrator.store.sqlite import SqliteStateStore

    gate = "    gate: {min_success_rate: 0.95, min_completed: 10, bake_minutes: 10}\n"
    text = README_CAMPAIGN.replace("name: ats-2026", "name: refused").replace(
        gate, gate + WINDOW.replace("CRON", "cron(0 2 L * ? *)"), 1
    )
    assert "cron(0 2 L" in text
    # gates two-device groups can pass (plan refuses the README's 0.95 and 0.98 over two)
    text = text.replace("min_success_rate: 0.95, min_completed: 10", "min_success_rate: 0.5")
    text = text.replace("min_success_rate: 0.98", "min_success_rate: 0.5")
    text = text.replace(
        "    gate: {min_success_rate: 0.5", "    gate: {confidence: 0.6, min_success_rate: 0.5"
    )
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    state = tmp_path / "state.sqlite"
    # the sandbox serves no MQTT listener: its endpoint could only be found unreachable
    code, output, exception = _plan(
        "--endpoint-url", sandbox_url, "plan", str(path), "--skip-endpoint-check"
    )
    assert (code, exception) == (0, None), output
    code, output, exception = _plan(
        "--endpoint-url",
        sandbox_url,
        "--state",
        str(state),
        "start",
        str(path),
        "--skip-endpoint-check",
    )
    assert exception is None, output
    assert code == 2, output
    assert "refused CreateJob for wave canary" in output
    assert "InvalidRequestException" in output
    stored = SqliteStateStore(state).load("refused").state
    assert stored.status is CampaignStatus.HALTED
    assert stored.wave("canary").phase is WavePhase.HALTED
