"""`ca-migrate sandbox fleet` with 300 devices: connect time, migration time, CPU and memory.

As a user runs it: `sandbox up --state-dir DIR --time-scale 60` and `sandbox fleet --state-dir
DIR` are two processes of their own; the things are provisioned with `sandbox provision`. One
migrate job (a real job document, built with the sandbox's stand-in roots) targets every device,
created with boto3. Run after `source scripts/env.sh` (`BENCH_FLEET_DEVICES` changes the size).

Figures: time until every device connected, time from CreateJob until every execution is
SUCCEEDED, the fleet process's CPU seconds while connecting, while migrating and over 30 idle
seconds (devices waiting for notifications), and its peak RSS (VmHWM); the sandbox's too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import boto3
from _common import write_result

import job_documents as jd

DEVICES = int(os.environ.get("BENCH_FLEET_DEVICES", "300"))
CLI = [sys.executable, "-m", "orchestrator.cli"]
IDLE_SECONDS = 30.0
TIMEOUT = 300.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _read_env(path: Path) -> dict[str, str]:
    import shlex

    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            out[key] = shlex.split(value)[0]
    return out


def _wait_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> None:
    if proc.stdout is None:
        raise SystemExit("the fleet's output is not captured")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if needle in line:
            return
        if not line and proc.poll() is not None:
            raise SystemExit(f"the fleet stopped: {proc.stderr.read() if proc.stderr else ''}")
    raise SystemExit(f"{needle!r} not seen within {timeout} s")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CA_MIGRATE_"))}
    wall = time.monotonic()
    up = subprocess.Popen(
        [*CLI, "sandbox", "up", "--state-dir", "sbx", "--time-scale", "60"],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    fleet: subprocess.Popen[str] | None = None
    try:
        env_file = work / "sbx" / "env.sh"
        while not env_file.exists():
            time.sleep(0.2)
        env.update(_read_env(env_file))
        canary = DEVICES // 6
        subprocess.run(
            [*CLI, "sandbox", "provision", "--things", str(DEVICES), "--group",
             f"canary:{canary}", "--group", "fleet"],
            cwd=work, env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        started = time.monotonic()
        fleet = subprocess.Popen(
            [*CLI, "sandbox", "fleet", "--state-dir", "sbx"],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_line(fleet, f"{DEVICES} connected", TIMEOUT)
        connected = time.monotonic() - started
        cpu_connect = _cpu_seconds(fleet.pid)
        time.sleep(IDLE_SECONDS)
        cpu_idle = _cpu_seconds(fleet.pid) - cpu_connect

        description = json.loads((work / "sbx" / "sandbox.json").read_text())
        catalog = jd.load_catalog(Path(description["ca_files"]["ats_catalog"]))
        ats = description["endpoints"]["ats"]["host"]
        doc = jd.build_document(
            operation="migrate",
            region="us-east-1",
            campaign="bench",
            wave="all",
            endpoint=jd.Endpoint(host=ats),
            roots=[catalog.get("amazon-root-ca-1"), catalog.get("amazon-root-ca-3")],
            catalog=catalog,
        )
        iot = boto3.client(
            "iot",
            endpoint_url=env["AWS_ENDPOINT_URL_IOT"],
            region_name="us-east-1",
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        arn = "arn:aws:iot:us-east-1:123456789012:thinggroup/"
        before = _cpu_seconds(fleet.pid)
        created = time.monotonic()
        iot.create_job(jobId="bench", targets=[arn + "canary", arn + "fleet"], document=doc.text)
        _wait_line(fleet, f"{DEVICES} succeeded", TIMEOUT)
        migrated = time.monotonic() - created
        cpu_migrate = _cpu_seconds(fleet.pid) - before
        fleet_rss = _peak_rss_mib(fleet.pid)
        sandbox_rss = _peak_rss_mib(up.pid)
        sandbox_cpu = _cpu_seconds(up.pid)
        asked = time.monotonic()
        fleet.send_signal(signal.SIGINT)
        fleet.communicate(timeout=60)
        stop = time.monotonic() - asked
    finally:
        if fleet is not None and fleet.poll() is None:
            fleet.kill()
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
    write_result(
        "sandbox_fleet",
        {
            "devices": DEVICES,
            "connect_seconds": round(connected, 1),
            "fleet_cpu_seconds_connecting": round(cpu_connect, 1),
            "fleet_cpu_share_idle": f"{cpu_idle / IDLE_SECONDS:.1%} of one core",
            "migrate_seconds": round(migrated, 1),
            "fleet_cpu_seconds_migrating": round(cpu_migrate, 1),
            "fleet_peak_rss_mib": round(fleet_rss, 1),
            "sandbox_peak_rss_mib": round(sandbox_rss, 1),
            "sandbox_cpu_seconds_total": round(sandbox_cpu, 1),
            "stop_seconds": round(stop, 1),
            "wall_seconds": round(time.monotonic() - wall, 1),
        },
    )


if __name__ == "__main__":
    main()
