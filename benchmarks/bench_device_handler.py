"""Device transaction time (excluding network) and agent memory.

One migrate transaction = validate the document (job_documents, jsonschema and
cryptography), journal every step with fsync, stage, TLS-probe a local server
(mutual TLS, generated CAs), back up, commit by rename, reconnect (in-memory
channel), report. Targets: p50 < 50 ms, peak RSS < 60 MiB with the MQTT SDK
loaded. The agent runs in a process of its own (the TLS server, the PKI generation
and the simulations do not count in its RSS). Also: memory per simulated device
(agent + in-memory channel) and the time of one simulated transaction.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import peak_rss_mib, write_result

ROUNDS = 60
SIM_DEVICES = 2000
SIM_TX = 500
LEGACY = "a1sandbox2demo.iot.us-east-1.amazonaws.com"
ATS = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"


SERVER = """
import sys, time
from pathlib import Path
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from device_handler.testing import PemFiles, TlsServer
cert, key, client_ca = (Path(p) for p in sys.argv[1:4])
issued = PemFiles(
    x509.load_pem_x509_certificate(cert.read_bytes()),
    load_pem_private_key(key.read_bytes(), None),
    cert,
    key,
)
with TlsServer(issued, client_ca=client_ca) as server:
    print(server.port, flush=True)
    sys.stdin.read()
"""


def tls_server(cert: Path, key: Path, client_ca: Path) -> tuple[subprocess.Popen[str], int]:
    """A local TLS server in its own process, so its memory is not counted as the agent's."""
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(cert), str(key), str(client_ca)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if process.stdout is None:
        raise SystemExit("the TLS server process has no stdout")
    return process, int(process.stdout.readline())


def quiet_logging() -> None:
    """Log as the CLI does (JSON, INFO), into /dev/null: rendering is part of the cost."""
    from device_handler import cli

    stderr = sys.stderr
    sys.stderr = open(os.devnull, "w")  # noqa: PTH123, SIM115 - lives as long as the process
    try:
        cli.configure_logging(verbose=False)
    finally:
        sys.stderr = stderr


def simulated_transactions(document: str, validator: object, legacy_pem: bytes) -> float:
    """Mean time of one simulated device's whole migrate: real files (tmpfs when there is
    one) without fsync, a stand-in probe, validation memoized per document text, the
    in-memory channel; what fleet simulations run."""
    from device_handler.agent import Agent, AgentSettings, DevicePaths
    from device_handler.memory import MemoryConnector
    from device_handler.probe import ProbeResult
    from device_handler.testing import MemoryJobs, NoSyncFileOps, memoized
    from device_handler.trust import EndpointConfig

    def no_network(*_args: object, **_kwargs: object) -> ProbeResult:
        return ProbeResult(elapsed_ms=0, tls_version="simulated", alpn=None, attempts=1)

    shm = Path("/dev/shm")  # noqa: S108 - a private mkdtemp below, only for its tmpfs speed
    scratch = shm if shm.is_dir() else Path(tempfile.gettempdir())
    base = Path(tempfile.mkdtemp(prefix="bench-sim-", dir=scratch))
    jobs = MemoryJobs()
    fs = NoSyncFileOps()
    validator = memoized(validator)  # type: ignore[arg-type]
    endpoint = EndpointConfig(LEGACY).render()
    try:
        agents = []
        for i in range(SIM_TX):
            thing = f"sim-{i:06d}"
            root = base / thing
            root.mkdir()
            (root / "endpoint.json").write_bytes(endpoint)
            (root / "trust.pem").write_bytes(legacy_pem)
            jobs.add_job(thing, "job", document)
            paths = DevicePaths(root / "endpoint.json", root / "trust.pem", root)
            agents.append(
                Agent(
                    AgentSettings(thing_name=thing, paths=paths),
                    validator,  # type: ignore[arg-type]
                    MemoryConnector(jobs, thing),
                    fs=fs,
                    probe_fn=no_network,
                )
            )
        started = time.perf_counter()
        for agent in agents:
            if agent.poll().status != "SUCCEEDED":
                raise SystemExit("a simulated transaction did not succeed")
        return (time.perf_counter() - started) * 1000 / SIM_TX
    finally:
        shutil.rmtree(base, ignore_errors=True)


def agent_child(spec: dict[str, str]) -> None:
    """The agent alone in its own process: transactions timed, then its peak RSS."""
    import awscrt.mqtt5  # noqa: F401 - the agent's MQTT stack counts in its RSS
    import awsiot.iotjobs  # noqa: F401

    from device_handler.agent import Agent, AgentSettings, DevicePaths
    from device_handler.memory import MemoryConnector
    from device_handler.probe import ClientIdentity
    from device_handler.testing import MemoryJobs
    from device_handler.trust import EndpointConfig
    from device_handler.validation import ValidationSettings, make_validator

    quiet_logging()
    work = Path(spec["work"])
    document = Path(spec["document"]).read_text()
    legacy_pem = Path(spec["legacy_pem"]).read_bytes()
    identity = ClientIdentity(Path(spec["cert"]), Path(spec["key"]))
    overrides = {f"{ATS}:8883": f"127.0.0.1:{spec['port']}"}
    validator = make_validator(
        ValidationSettings(region="us-east-1", catalog=Path(spec["catalog"]))
    )
    timings: list[float] = []
    for round_ in range(ROUNDS):
        root = work / f"device-{round_}"
        (root / "state").mkdir(parents=True)
        paths = DevicePaths(root / "endpoint.json", root / "trust.pem", root / "state")
        paths.endpoint_file.write_bytes(EndpointConfig(LEGACY).render())
        paths.trust_bundle.write_bytes(legacy_pem)
        jobs = MemoryJobs()
        jobs.add_job("thing", "job", document)
        agent = Agent(
            AgentSettings(thing_name="thing", paths=paths, identity=identity, overrides=overrides),
            validator,
            MemoryConnector(jobs, "thing"),
        )
        started = time.perf_counter()
        outcome = agent.poll()
        timings.append((time.perf_counter() - started) * 1000)
        if outcome.status != "SUCCEEDED":
            raise SystemExit(f"round {round_}: {outcome}")
        shutil.rmtree(root)
    sys.stdout.write(json.dumps({"timings": timings, "rss": peak_rss_mib()}) + "\n")


def main() -> None:
    from device_handler.agent import Agent, AgentSettings, DevicePaths
    from device_handler.memory import MemoryChannel, MemoryConnector
    from device_handler.testing import MemoryJobs, TestPki
    from device_handler.validation import ValidationSettings, make_validator
    from job_documents import Endpoint, Operation, build_document, load_catalog
    from job_documents.testing import write_catalog

    work = Path(tempfile.mkdtemp(prefix="bench-device-"))
    try:
        pki = TestPki(work / "pki")
        legacy_root, ats_root, device_ca = pki.ca("legacy"), pki.ca("ats"), pki.ca("device")
        device = pki.leaf("thing", device_ca, client=True)
        server = pki.leaf("ats-server", ats_root, hosts=(ATS,))
        catalog = write_catalog(work / "catalog", {"amazon-root-ca-1": ats_root.pem.decode()})
        loaded = load_catalog(catalog)
        document = build_document(
            operation=Operation.MIGRATE,
            region="us-east-1",
            campaign="bench",
            wave="w",
            endpoint=Endpoint(host=ATS),
            roots=[loaded.get("amazon-root-ca-1")],
            catalog=loaded,
        ).text
        (work / "document.json").write_text(document)
        validator = make_validator(ValidationSettings(region="us-east-1", catalog=catalog))
        quiet_logging()
        process, port = tls_server(server.cert_path, server.key_path, device_ca.cert_path)
        try:
            spec = {
                "work": str(work / "rounds"),
                "document": str(work / "document.json"),
                "legacy_pem": str(legacy_root.cert_path),
                "cert": str(device.cert_path),
                "key": str(device.key_path),
                "catalog": str(catalog),
                "port": str(port),
            }
            child = subprocess.run(
                [sys.executable, __file__, "--agent-child", json.dumps(spec)],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
        finally:
            process.communicate("")
        measured = json.loads(child.stdout.strip().splitlines()[-1])
        timings = sorted(measured["timings"])
        agent_rss = measured["rss"]
        sim_ms = simulated_transactions(document, validator, legacy_root.pem)
        backend = MemoryJobs()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        fleet = [
            Agent(
                AgentSettings(
                    thing_name=f"sim-{i:06d}",
                    paths=DevicePaths(work / "e.json", work / "t.pem", work / "s"),
                ),
                validator,
                MemoryConnector(backend, f"sim-{i:06d}"),
            )
            for i in range(SIM_DEVICES)
        ]
        channels = [MemoryChannel(backend, f"sim-{i:06d}", via="ats") for i in range(SIM_DEVICES)]
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
        per_device = grown / SIM_DEVICES
        del fleet, channels
        write_result(
            "device_handler",
            {
                "transaction_ms_p50": round(statistics.median(timings), 2),
                "transaction_ms_p95": round(timings[int(len(timings) * 0.95) - 1], 2),
                "transaction_ms_min": round(timings[0], 2),
                "rounds": ROUNDS,
                "target_p50_ms": 50,
                "agent_peak_rss_mib": round(agent_rss, 1),
                "target_rss_mib": 60,
                "simulated_device_bytes": round(per_device),
                "simulated_transaction_ms_mean": round(sim_ms, 3),
                "simulated_transactions": SIM_TX,
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--agent-child":
        agent_child(json.loads(sys.argv[2]))
    else:
        main()
