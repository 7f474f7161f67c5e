"""`ca-migrate-device`: the device agent's command line.

Commands (all take `--config device.toml`):
- `run`: recover from the journal, then handle jobs as they come (`--once`
  handles what is pending and exits); SIGTERM/SIGINT stop it between steps.
- `status`: the journal and the live configuration, as JSON; no network.
- `recover`: apply the recovery table now and print the outcome.

Exit codes: 0 done; 1 the agent failed (see the log); 2 the configuration is wrong.
This is the only place that configures logging (structlog, JSON lines on stderr).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import structlog

from device_handler.agent import Agent
from device_handler.config import DeviceConfig, load_config
from device_handler.errors import ConfigError, DeviceHandlerError
from device_handler.lock import state_lock
from job_documents import logs

__all__ = ["build_agent", "configure_logging", "main"]

log = structlog.get_logger(__name__)


def configure_logging(verbose: bool, stream: TextIO | None = None) -> None:
    """JSON log events on `stream` (default: standard error)."""
    import logging

    logs.configure_logging(
        level=logging.DEBUG if verbose else logging.INFO, stream=stream, sort_keys=True
    )


def build_agent(config: DeviceConfig) -> Agent:
    """The production agent for `config`: job_documents validator, MQTT channel."""
    from device_handler.mqtt import MqttConnector
    from device_handler.validation import make_validator

    connector = MqttConnector(
        config.thing_name,
        config.identity(),
        overrides=config.connect_override,
        protocol=config.protocol,
        operation_timeout=config.connect_timeout_seconds,
    )
    validation = config.validation_settings()
    settings = replace(config.agent_settings(), root_names=_root_names(validation.catalog))
    return Agent(settings, make_validator(validation), connector)


def _root_names(catalog: Path | None) -> dict[str, str]:
    """SHA-256 -> catalog name of the roots the device may be told to trust (for its shadow)."""
    import job_documents as jd

    try:
        return {root.sha256: root.name for root in jd.load_catalog(catalog).roots}
    except jd.JobDocumentError as exc:
        raise ConfigError(f"catalog {catalog or '(packaged)'}: {exc}") from exc


def _run(config: DeviceConfig, *, once: bool) -> int:
    agent = build_agent(config)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    outcome = agent.recover()
    log.info("recovered", status=outcome.status, job_id=outcome.job_id)
    agent.publish_trust_state()
    try:
        while not stop.is_set():
            try:
                outcome = agent.poll()
                if outcome.status == "DEFERRED":
                    log.info("job_deferred", job_id=outcome.job_id, reason=outcome.reason)
                    if once or stop.wait(min(config.poll_seconds, 5.0)):
                        break
                    continue
                if outcome.status != "NONE":
                    log.info("job", job_id=outcome.job_id, status=outcome.status)
                    continue
                if once:
                    break
                channel = agent.connect()
                waited = 0.0
                while waited < config.poll_seconds and not stop.is_set():
                    if channel.wait_for_jobs(min(1.0, config.poll_seconds - waited)):
                        break
                    waited += 1.0
            except DeviceHandlerError as exc:
                if isinstance(exc, ConfigError):
                    raise
                log.warning("agent_retry", error=str(exc))
                agent.disconnect()
                if once or stop.wait(min(config.poll_seconds, 5.0)):
                    break
    finally:
        agent.disconnect()
    return 0


def _status(config: DeviceConfig) -> dict[str, Any]:
    from device_handler.agent import Agent as _Agent
    from device_handler.memory import MemoryConnector
    from device_handler.order import Order

    def never(_raw: object) -> Order:
        raise AssertionError("status validates nothing")

    settings = replace(
        config.agent_settings(), root_names=_root_names(config.validation_settings().catalog)
    )
    agent = _Agent(settings, never, MemoryConnector(_NoJobs(), config.thing_name))
    journal = agent.read_journal()
    state = agent.trust_state(journal)
    state["journal"] = journal.as_dict()
    return state


class _NoJobs:
    def describe_execution(self, *_a: object, **_k: object) -> Any:
        raise AssertionError("status does not talk to the service")

    def update_execution(self, *_a: object, **_k: object) -> Any:
        raise AssertionError("status does not talk to the service")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ca-migrate-device", description="Device agent for the ca-migrate trust migration."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "recover, then handle jobs until stopped"),
        ("status", "print the journal and the live configuration as JSON"),
        ("recover", "apply the recovery table to the journal now"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--config", type=Path, required=True, help="device.toml")
        if name == "run":
            command.add_argument(
                "--once", action="store_true", help="handle pending jobs, then exit"
            )
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        config = load_config(args.config)
        if args.command == "status":
            print(json.dumps(_status(config), indent=2, sort_keys=True))
            return 0
        with state_lock(config.state_dir):
            if args.command == "recover":
                outcome = build_agent(config).recover()
                print(
                    json.dumps(
                        {
                            "job_id": outcome.job_id,
                            "status": outcome.status,
                            "reason": outcome.reason,
                        }
                    )
                )
                return 0
            return _run(config, once=args.once)
    except ConfigError as exc:
        print(f"ca-migrate-device: configuration error: {exc}", file=sys.stderr)
        return 2
    except DeviceHandlerError as exc:
        print(f"ca-migrate-device: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
