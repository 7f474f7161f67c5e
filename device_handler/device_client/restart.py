"""Restarting AWS IoT Device Client after a successful job, when the device asks for it.

Device Client reads its configuration (endpoint, root CA) only when it starts, so
after a migrate it is still connected on the old endpoint with the old roots loaded.
The handler is Device Client's child: restarting Device Client before Device Client
has delivered the SUCCEEDED update would leave the execution IN_PROGRESS and the
restarted Device Client would run the job again. So the restart is

- configured on the device only (`device_client_restart` in device.toml, a command
  as a list of arguments, never a shell line): a job document cannot ask for one
  nor choose the command;
- run detached (a session of its own, no inherited descriptors) after
  `device_client_restart_delay_seconds` (default 30), once the handler has exited
  and Device Client has had time to report. A command that leaves Device Client's
  service (systemd's `systemd-run --on-active=30 systemctl restart ...`) survives
  the restart's stop of the service's processes;
- never a reason to fail the job: the transaction succeeded, and a restart that
  cannot be started is reported beside it.

A repeated job (its SUCCEEDED was not delivered before the restart) is reported
SUCCEEDED again from the journal and schedules one more restart: it converges once
the update is delivered.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import structlog

__all__ = ["schedule_restart"]

log = structlog.get_logger(__name__)

#: `sleep <delay>` then `exec` the command: its arguments are never parsed by the shell.
_WAIT_THEN_RUN = 'sleep "$0" && exec "$@"'


def schedule_restart(command: Sequence[str], delay: float) -> str:
    """Start `command` detached after `delay` seconds; what was done, for the report."""
    try:
        # the device's own configured command, as argv
        subprocess.Popen(
            ["/bin/sh", "-c", _WAIT_THEN_RUN, f"{delay:g}", *command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
        )
    except OSError as exc:
        log.warning("device_client_restart_failed", command=command[0], error=str(exc))
        return f"not started: {exc.strerror or exc}"
    log.info("device_client_restart_scheduled", command=command[0], delay_seconds=delay)
    return f"{command[0]} in {delay:g} s"
