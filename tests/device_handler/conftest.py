"""Shared fixtures: a generated PKI, real TLS servers for the two endpoints, device files."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from device_handler.agent import Agent, AgentSettings, DevicePaths
from device_handler.errors import DocumentRejected
from device_handler.fsops import FileOps, StrPath
from device_handler.memory import MemoryConnector
from device_handler.order import Order
from device_handler.probe import ClientIdentity, probe
from device_handler.testing import MemoryJobs, PemFiles, TestPki, TlsServer
from device_handler.trust import BundleRoot, EndpointConfig

LEGACY_HOST = "a1sandbox2demo.iot.us-east-1.amazonaws.com"
ATS_HOST = "a1sandbox2demo-ats.iot.us-east-1.amazonaws.com"
THING = "thing-0001"


def fingerprint(cert: PemFiles) -> str:
    return hashlib.sha256(cert.cert.public_bytes(Encoding.DER)).hexdigest()


@dataclass
class World:
    pki: TestPki
    legacy_root: PemFiles
    ats_root: PemFiles
    other_root: PemFiles
    device: PemFiles
    legacy: TlsServer
    ats: TlsServer
    overrides: dict[str, str]

    @property
    def identity(self) -> ClientIdentity:
        return ClientIdentity(cert=self.device.cert_path, key=self.device.key_path)

    def legacy_endpoint(self) -> EndpointConfig:
        return EndpointConfig(LEGACY_HOST, 8883)

    def ats_endpoint(self) -> EndpointConfig:
        return EndpointConfig(ATS_HOST, 8883)

    def handshake(self, endpoint: EndpointConfig, ca_file: StrPath) -> None:
        """A real mutual-TLS handshake with the local server standing in for `endpoint`."""
        probe(
            endpoint,
            ca_file,
            client_id=THING,
            identity=self.identity,
            overrides=self.overrides,
            timeout=3,
        )


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    pki = TestPki(tmp_path_factory.mktemp("pki"))
    legacy_root = pki.ca("Stand-in VeriSign Class 3 G5")
    ats_root = pki.ca("Stand-in Amazon Root CA 1")
    other_root = pki.ca("Unrelated Root")
    device_ca = pki.ca("Device CA")
    device = pki.leaf(THING, device_ca, client=True)
    legacy_leaf = pki.leaf("legacy", legacy_root, hosts=(LEGACY_HOST,))
    ats_leaf = pki.leaf("ats", ats_root, hosts=(ATS_HOST,))
    with (
        TlsServer(legacy_leaf, client_ca=device_ca.cert_path) as legacy,
        TlsServer(ats_leaf, client_ca=device_ca.cert_path) as ats,
    ):
        overrides = {
            f"{LEGACY_HOST}:8883": f"127.0.0.1:{legacy.port}",
            f"{ATS_HOST}:8883": f"127.0.0.1:{ats.port}",
        }
        yield World(pki, legacy_root, ats_root, other_root, device, legacy, ats, overrides)


def order_from(raw: str | bytes | Mapping[str, Any]) -> Order:
    """A stand-in validator for tests of the transaction: a minimal, trusted document shape."""
    try:
        body: Any = json.loads(raw) if isinstance(raw, str | bytes) else dict(raw)
        endpoint = body.get("endpoint")
        return Order(
            operation=body["operation"],
            campaign="c",
            wave="w",
            region="us-east-1",
            sha256=hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest(),
            endpoint=EndpointConfig(endpoint["host"], endpoint.get("port", 8883))
            if endpoint
            else None,
            roots=tuple(
                BundleRoot(sha256=r["sha256"], pem=r["pem"]) for r in body.get("roots", [])
            ),
            remove=frozenset(body.get("remove", [])),
            keep_existing=body.get("keepExisting", True),
            probe_timeout=2.0,
            probe_attempts=1,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DocumentRejected("schema", str(exc)) from exc


def migrate_doc(world: World, *, keep_existing: bool = True, root: PemFiles | None = None) -> str:
    root = root or world.ats_root
    return json.dumps(
        {
            "operation": "migrate",
            "endpoint": {"host": ATS_HOST, "port": 8883},
            "roots": [{"sha256": fingerprint(root), "pem": root.pem.decode()}],
            "keepExisting": keep_existing,
        }
    )


@dataclass
class Device:
    """A device's files and the pieces an agent is built from."""

    root: Path
    paths: DevicePaths
    jobs: MemoryJobs
    world: World

    def agent(
        self,
        *,
        fs: FileOps | None = None,
        dead_man_seconds: float = 2.0,
        refuse: frozenset[str] = frozenset(),
        connector: MemoryConnector | None = None,
    ) -> Agent:
        def check(endpoint: EndpointConfig, ca_file: StrPath) -> None:
            if endpoint.host in refuse:
                raise ConnectionRefusedError(f"{endpoint.host} refused (test)")
            self.world.handshake(endpoint, ca_file)

        connector = connector or MemoryConnector(
            self.jobs, THING, vias={LEGACY_HOST: "legacy", ATS_HOST: "ats"}, check=check, shadows={}
        )
        settings = AgentSettings(
            thing_name=THING,
            paths=self.paths,
            identity=self.world.identity,
            overrides=self.world.overrides,
            dead_man_seconds=dead_man_seconds,
            connect_timeout=2.0,
        )
        return Agent(settings, order_from, connector, fs=fs)

    def live(self) -> tuple[bytes, ...]:
        """The live files' bytes: endpoint file, bundle (and Device Client's config)."""
        files = [self.paths.endpoint_file, self.paths.trust_bundle]
        if self.paths.device_client_config is not None:
            files.append(self.paths.device_client_config)
        return tuple(path.read_bytes() for path in files)

    def device_client_endpoint(self) -> str:
        assert self.paths.device_client_config is not None
        endpoint = json.loads(self.paths.device_client_config.read_bytes())["endpoint"]
        assert isinstance(endpoint, str)
        return endpoint

    def copy(self, dest: Path) -> Device:
        shutil.copytree(self.root, dest)
        return Device(
            dest,
            _paths(dest, self.paths.device_client_config is not None),
            MemoryJobs(),
            self.world,
        )


def _paths(root: Path, device_client: bool) -> DevicePaths:
    return DevicePaths(
        endpoint_file=root / "etc" / "endpoint.json",
        trust_bundle=root / "etc" / "trust.pem",
        state_dir=root / "state",
        # Device Client keeps its config in its own directory: a third directory to fsync.
        device_client_config=root / "dc" / "aws-iot-device-client.conf" if device_client else None,
    )


def make_device(world: World, root: Path, *, device_client: bool = False) -> Device:
    """A device on the legacy endpoint and root; `device_client`: it also runs Device Client."""
    (root / "etc").mkdir(parents=True)
    (root / "state").mkdir()
    paths = _paths(root, device_client)
    paths.endpoint_file.write_bytes(world.legacy_endpoint().render())
    paths.trust_bundle.write_bytes(world.legacy_root.pem)
    if paths.device_client_config is not None:
        paths.device_client_config.parent.mkdir()
        paths.device_client_config.write_text(
            json.dumps(
                {
                    "endpoint": LEGACY_HOST,
                    "cert": str(world.device.cert_path),
                    "key": str(world.device.key_path),
                    "root-ca": str(paths.trust_bundle),
                    "thing-name": THING,
                },
                indent=4,
            )
        )
    return Device(root, paths, MemoryJobs(), world)


@pytest.fixture
def device(world: World, tmp_path: Path) -> Device:
    return make_device(world, tmp_path / "device")


@pytest.fixture
def world_device_client(world: World, tmp_path: Path) -> Device:
    """A device that also runs AWS IoT Device Client (its JSON config in its own directory)."""
    return make_device(world, tmp_path / "device", device_client=True)
