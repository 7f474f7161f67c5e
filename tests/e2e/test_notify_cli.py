"""`ca-migrate run --follow --notify ...`: the operator's follow loop announces its decisions."""

from __future__ import annotations

from tests.orchestrator.webhook_kit import webhook_server

from .campaign_kit import THINGS, Fleet, campaign_text, cli, in_process


def test_run_follow_announces_one_halt_as_one_webhook_message(sandbox, tmp_path) -> None:
    state = tmp_path / "state.sqlite"
    path = tmp_path / "c.yaml"
    path.write_text(campaign_text())
    with webhook_server() as hook, Fleet(sandbox, failing=frozenset(THINGS[:3])):
        assert cli(sandbox, state, "start", str(path)).returncode == 0
        result = cli(
            sandbox,
            state,
            "run",
            "e2e",
            "--follow",
            "--interval",
            "0.1",
            "--notify",
            f"webhook:{hook.url}",
        )
    assert result.returncode == 1, result.stderr  # a halted campaign fails the follow
    assert "HALTED" in result.stdout
    (post,) = hook.posts
    text = post["json"]["text"]
    assert "ca-migrate e2e: campaign-halted" in text
    assert "wave canary halted" in text
    assert "s3cr3t-token" not in result.stdout + result.stderr


def test_a_notify_target_that_is_not_one_exits_2_before_any_step(sandbox, tmp_path) -> None:
    ran = in_process(sandbox, tmp_path / "state.sqlite", "run", "e2e", "--notify", "slack:#ops")
    assert ran.returncode == 2
    assert "--notify" in ran.stderr
    assert "Traceback" not in ran.stderr
