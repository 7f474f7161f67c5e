"""`ca-migrate sandbox ...`: run the local AWS IoT Jobs stand-in and fill it with a fleet.

Exit codes: 0 ok, 2 invalid input, 1 anything else (cannot start, sandbox
unreachable).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer

from infra.sandbox import decisions as d
from infra.sandbox.errors import PortUnavailableError, SandboxError, ServiceError

if TYPE_CHECKING:
    from infra.sandbox.engine import ConnectPolicy
    from infra.sandbox.mqtt import ListenerPorts

__all__ = ["parse_group", "sandbox_app"]

EXIT_FAILURE = 1
EXIT_INVALID = 2
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")

sandbox_app = typer.Typer(
    name="sandbox",
    help="Run a local AWS IoT Jobs stand-in (control plane, iot-jobs-data, MQTT) and provision "
    "a simulated fleet in it.",
    no_args_is_help=True,
)


def _fail(message: str, code: int) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


@sandbox_app.command("up")
def up(
    port: Annotated[int, typer.Option(help="Control-plane port (0: any free port).")] = 0,
    region: Annotated[
        list[str] | None,
        typer.Option(
            help="AWS region the sandbox pretends to be; repeat it to serve several regions "
            "(the first is the default), each with its own jobs, things and MQTT listeners. "
            f"Default {d.DEFAULT_REGION}."
        ),
    ] = None,
    time_scale: Annotated[
        float, typer.Option(help="Sandbox seconds per real second (60: an hour in a minute).")
    ] = 1.0,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Keep jobs, things and the PKI in this directory across restarts."),
    ] = None,
    throttle_rate: Annotated[
        float, typer.Option(help="Share of control-plane calls answered ThrottlingException.")
    ] = 0.0,
    enforce_quotas: Annotated[
        bool,
        typer.Option(
            "--enforce-quotas", help="Throttle CreateJob, DescribeJob, ... over 10 calls/s."
        ),
    ] = False,
    no_mqtt: Annotated[
        bool, typer.Option("--no-mqtt", help="Control plane and iot-jobs-data only.")
    ] = False,
    mqtt_port: Annotated[
        list[int] | None,
        typer.Option(
            help="Serve the (first region's) ATS endpoint's MQTT on this port, as AWS does "
            "(repeatable): 443 is MQTT with ALPN x-amzn-mqtt-ca, any other port (8883) MQTT "
            "over mutual TLS. Default: free ports.",
        ),
    ] = None,
    connect_policy: Annotated[
        str,
        typer.Option(
            help="The AWS IoT policy a device CONNECT must satisfy: thing-name (the project's "
            "device policy: the client id is the name of a thing the certificate is attached "
            "to) or any-client-id (the SDK samples' policy: iot:Connect on client/*, the "
            "topics of the one thing the certificate is attached to).",
        ),
    ] = "thing-name",
    output: Annotated[str, typer.Option(help="text or json (first stdout line).")] = "text",
) -> None:
    """Run the sandbox in the foreground until SIGINT or SIGTERM."""
    from infra.sandbox.runtime import Sandbox

    if output not in ("text", "json"):
        raise _fail("--output takes text or json", EXIT_INVALID)
    ports, policy = _mqtt_options(mqtt_port or [], connect_policy, no_mqtt=no_mqtt)
    if not 0.0 <= throttle_rate <= 1.0:
        raise _fail("--throttle-rate is a share of calls, from 0 to 1", EXIT_INVALID)
    if time_scale <= 0:
        raise _fail("--time-scale must be a positive number", EXIT_INVALID)
    stop = threading.Event()

    def _on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    regions = list(dict.fromkeys(region or [d.DEFAULT_REGION]))
    bad = [r for r in regions if not _REGION.match(r)]
    if bad:
        raise _fail(
            f"--region {bad[0]!r} is not an AWS region name such as us-east-1", EXIT_INVALID
        )
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    sandbox = Sandbox(
        port=port,
        region=regions[0],
        regions=regions[1:],
        time_scale=time_scale,
        # absolute: the paths it hands out (credentials, CA files) are read by other processes
        state_dir=None if state_dir is None else state_dir.resolve(),
        mqtt=not no_mqtt,
        throttle_rate=throttle_rate,
        enforce_quotas=enforce_quotas,
        mqtt_ports=ports,
        connect_policy=policy,
    )
    try:
        try:
            sandbox.start()
        except PortUnavailableError as exc:
            raise _fail(f"the sandbox did not start: {exc}", EXIT_INVALID) from exc
        except SandboxError as exc:
            raise _fail(f"the sandbox did not start: {exc}", EXIT_FAILURE) from exc
        except OSError as exc:
            raise _fail(
                f"the sandbox did not start: {exc} (choose another --port, or 0 for any free "
                "port; check --state-dir is writable)",
                EXIT_FAILURE,
            ) from exc
        description = sandbox.describe()
        env_file = None if state_dir is None else _connection_files(state_dir, description)
        if output == "json":
            print(json.dumps(description), flush=True)
        else:
            print(_text(description, env_file), flush=True)
        stop.wait()
    finally:
        sandbox.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _mqtt_options(
    mqtt_port: list[int], connect_policy: str, *, no_mqtt: bool
) -> tuple[ListenerPorts | None, ConnectPolicy]:
    """`--mqtt-port` and `--connect-policy`, checked (exit 2 when the sandbox cannot serve them)."""
    from infra.sandbox.engine import ConnectPolicy

    policies = [p.value for p in ConnectPolicy]
    if connect_policy not in policies:
        raise _fail(f"--connect-policy takes {' or '.join(policies)}", EXIT_INVALID)
    if not mqtt_port:
        return None, ConnectPolicy(connect_policy)
    if no_mqtt:
        raise _fail("--mqtt-port serves MQTT: drop --no-mqtt", EXIT_INVALID)
    from infra.sandbox.mqtt import listener_ports

    try:
        return listener_ports(mqtt_port), ConnectPolicy(connect_policy)
    except PortUnavailableError as exc:
        raise _fail(str(exc), EXIT_INVALID) from exc


def _connection_files(state_dir: Path, description: dict[str, Any]) -> Path:
    """env.sh, sandbox.json and .gitignore in the state dir (see infra/sandbox/connection.py)."""
    from infra.sandbox.connection import write_connection_files

    try:
        return write_connection_files(state_dir, description)
    except OSError as exc:
        raise _fail(f"cannot write the env file in {state_dir}: {exc}", EXIT_FAILURE) from exc


def _text(description: dict[str, Any], env_file: Path | None = None) -> str:
    from infra.sandbox.connection import env_lines

    lines = [
        "AWS IoT Jobs sandbox running; Ctrl-C (or SIGTERM) stops it.",
        f"  control plane (iot)   {description['control_plane_url']}",
        f"  iot-jobs-data         {description['jobs_data_url']}",
        f"  admin API             {description['admin_url']}",
        f"  region / account      {description['region']} / {description['account_id']}",
    ]
    regions = description.get("regions") or {description["region"]: description}
    for name, served in regions.items():
        if len(regions) > 1:
            lines.append(f"  region {name}")
        for kind, endpoint in served["endpoints"].items():
            lines.append(f"  MQTT {kind:<16} {endpoint['host']}:{endpoint['port']}")
            if endpoint.get("alpn_port"):
                alpn = f"{kind} ALPN"
                lines.append(f"  MQTT {alpn:<16} {endpoint['host']}:{endpoint['alpn_port']}")
    if description.get("ca_dir"):
        lines.append(f"  CA directory          {description['ca_dir']}")
    if description.get("time_scale") is not None:
        lines.append(f"  time scale            x{description['time_scale']:g} (sandbox time)")
    lines.append("")
    if env_file is not None:
        lines.append(f"In another shell: source {env_file}   (these lines:)")
    lines.extend(env_lines(description["env"]))
    return "\n".join(lines)


def parse_group(spec: str) -> tuple[str, int | None]:
    """`NAME` or `NAME:COUNT` (group names may contain ':'; a numeric last part is the count)."""
    name, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit() and name:
        return name, int(tail)
    return spec, None


def _admin_call(admin_url: str, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    parsed = urlsplit(admin_url)
    if parsed.scheme != "http" or parsed.hostname is None:
        raise ServiceError("InvalidRequestException", f"{admin_url} is not an http:// URL", 400)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=60)
    try:
        connection.request(
            method,
            parsed.path.rstrip("/") + path,
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        payload = json.loads(response.read() or b"{}")
    finally:
        connection.close()
    if response.status != 200:  # noqa: PLR2004
        raise ServiceError(
            str(payload.get("code", "Error")), str(payload.get("message", "")), response.status
        )
    result: dict[str, Any] = payload
    return result


@sandbox_app.command("provision")
def provision(
    ctx: typer.Context,
    things: Annotated[int, typer.Option(help="How many things to create.")] = 10,
    group: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME[:COUNT], repeatable: groups take consecutive slices of the things; "
            "a group without COUNT takes the rest."
        ),
    ] = None,
    prefix: Annotated[str, typer.Option(help="Thing names are PREFIX-00001, ...")] = "device",
    admin_url: Annotated[
        str | None, typer.Option(help="The sandbox's admin URL (.../_sandbox).")
    ] = None,
    endpoint_url: Annotated[
        str | None, typer.Option(help="The sandbox's control-plane URL (the iot endpoint).")
    ] = None,
    region: Annotated[
        str, typer.Option(help="The sandbox's region to create them in.")
    ] = d.DEFAULT_REGION,
    output: Annotated[str, typer.Option(help="text or json.")] = "text",
) -> None:
    """Create things, thing groups and device credentials in a running sandbox (one region)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from infra.sandbox.runtime import DUMMY_CREDENTIALS, PROVISION_RETRIES, plan_provision

    if output not in ("text", "json"):
        raise _fail("--output takes text or json", EXIT_INVALID)
    control = endpoint_url or getattr(ctx.obj, "endpoint_url", None)
    if admin_url is None and control is None:
        raise _fail(
            "give --endpoint-url (or AWS_ENDPOINT_URL_IOT) or --admin-url of a running sandbox",
            EXIT_INVALID,
        )
    if admin_url is None:
        assert control is not None  # noqa: S101 - checked above
        admin_url = control.rstrip("/") + "/_sandbox"
    if control is None:
        control = admin_url.rstrip("/").removesuffix("/_sandbox")
    try:
        names, membership = plan_provision(
            things, [parse_group(g) for g in group or []], prefix=prefix
        )
    except ServiceError as exc:
        raise _fail(exc.message, EXIT_INVALID) from exc
    # Throttling (the sandbox's own fault included) is retried as the orchestrator's
    # client does: botocore's adaptive mode, which also paces the calls that follow.
    iot = boto3.session.Session(
        aws_access_key_id=DUMMY_CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=DUMMY_CREDENTIALS["aws_secret_access_key"],
        region_name=region,
    ).client("iot", endpoint_url=control, config=PROVISION_RETRIES)
    try:
        for name in names:
            iot.create_thing(thingName=name)
        for group_name, members in membership.items():
            iot.create_thing_group(thingGroupName=group_name)
            for name in members:
                iot.add_thing_to_thing_group(thingGroupName=group_name, thingName=name)
    except ClientError as exc:
        raise _fail(f"the sandbox refused: {exc}", EXIT_INVALID) from exc
    except BotoCoreError as exc:
        raise _fail(f"cannot reach the sandbox at {control}: {exc}", EXIT_FAILURE) from exc
    credentials: dict[str, Any] = {}
    note = None
    try:
        credentials = _admin_call(
            admin_url, "POST", "/credentials", {"things": names, "region": region}
        )["credentials"]
    except ServiceError as exc:
        note = f"no device credentials: {exc.message}"
    except OSError as exc:
        raise _fail(f"cannot reach the sandbox admin API at {admin_url}: {exc}", 1) from exc
    result = {
        "things": names,
        "groups": membership,
        "credentials": credentials,
    }
    if note:
        result["note"] = note
        print(f"warning: {note}", file=sys.stderr)
    if output == "json":
        print(json.dumps(result))
        return
    print(f"created {len(names)} things")
    for group_name, members in membership.items():
        print(f"  group {group_name}: {len(members)} things")
    if credentials:
        print(_credentials_line(credentials))


def _credentials_line(credentials: Mapping[str, Any]) -> str:
    """Where the things' certificates and keys were written, and how many: never a PEM.

    The admin API answers file paths; only the directories that hold them are named
    (one per thing, with cert.pem and key.pem), so no certificate or key, nor any part
    of one, reaches the terminal even if an answer carried a PEM body.
    """
    roots: set[str] = set()
    for files in credentials.values():
        paths = files.values() if isinstance(files, Mapping) else ()
        for path in paths:
            text = str(path)
            if "-----" in text or "\n" in text or not Path(text).is_absolute():
                continue  # not a file path: never print it
            roots.add(str(Path(text).parent.parent))
    count = len(credentials)
    if len(roots) == 1:
        where = roots.pop()
        return (
            f"credentials for {count} things written under {where} "
            f"(one directory per thing: cert.pem, key.pem)"
        )
    return f"credentials for {count} things written by the sandbox PKI (--output json lists them)"


@sandbox_app.command("fleet")
def fleet(
    ctx: typer.Context,
    state_dir: Annotated[Path, typer.Option(help="The --state-dir of the running `sandbox up`.")],
    group: Annotated[
        list[str] | None,
        typer.Option(help="Only the things of this thing group (repeatable)."),
    ] = None,
    thing: Annotated[
        list[str] | None, typer.Option(help="Only this thing (repeatable; adds to --group).")
    ] = None,
    fail_rate: Annotated[
        float,
        typer.Option(
            help="Share of each group's devices whose migration fails (their ATS endpoint is "
            "unreachable: the probe fails, they roll back and report FAILED)."
        ),
    ] = 0.0,
    offline: Annotated[
        str | None,
        typer.Option(help="Devices that never connect: a share (0.1, 10%) or a count (5)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Which devices fail or stay offline.")] = 7,
    region: Annotated[
        str | None,
        typer.Option(
            help="The things of this region of a sandbox serving several (default: its first)."
        ),
    ] = None,
    signing_public_key: Annotated[
        Path | None,
        typer.Option(
            help="A document-signing public key (PEM, Ed25519 or P-256) every device pins, as "
            "device.toml's signing_public_key: they take only documents it signed."
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every device event on stderr.")
    ] = False,
) -> None:
    """Run real device agents (MQTT, mutual TLS) for the things of a running sandbox.

    Until SIGINT or SIGTERM. Each device's files and its device.toml are in
    STATE_DIR/fleet/<thing>/. On a terminal one line shows the fleet; otherwise
    a line is printed whenever it changes.
    """
    from infra.sandbox.fleet_command import run_fleet

    del ctx
    code = run_fleet(
        state_dir=state_dir,
        groups=group or [],
        things=thing or [],
        fail_rate=fail_rate,
        offline=offline,
        seed=seed,
        verbose=verbose,
        region=region,
        signing_public_key=signing_public_key,
    )
    if code:
        raise typer.Exit(code)


def _trust_store(store_root: Path) -> Any:
    from infra.sandbox.truststore import DebianTrustStore

    return DebianTrustStore(store_root.resolve())


def _sandbox_pki(state_dir: Path, *, create: bool) -> Any:
    from infra.sandbox.pki import SandboxPki

    directory = state_dir.resolve() / "pki"
    missing = not (directory / "pki.json").exists()
    if missing and not create:
        raise _fail(f"there is no sandbox PKI in {directory}: check --state-dir", EXIT_INVALID)
    if not missing:
        # Only its root PEMs are read: a `sudo` run leaves the PKI's files as they are.
        return SandboxPki(directory, region=d.DEFAULT_REGION, endpoint_prefix=d.ENDPOINT_PREFIX)
    try:
        pki = SandboxPki.create_or_load(directory, endpoint_prefix=d.ENDPOINT_PREFIX)
    except OSError as exc:
        raise _fail(f"cannot use the sandbox PKI in {directory}: {exc}", EXIT_INVALID) from exc
    except SandboxError as exc:
        raise _fail(str(exc), EXIT_INVALID) from exc
    print(f"created the sandbox PKI in {directory} (`sandbox up --state-dir` uses it)")
    return pki


def _store_warnings(store: Any) -> None:
    """Warn when the environment points clients at another bundle than the store's."""
    for variable, path in (("SSL_CERT_FILE", store.bundle), ("SSL_CERT_DIR", store.certs_dir)):
        value = os.environ.get(variable)
        if value and Path(value).resolve() != path.resolve():
            print(
                f"warning: {variable} is set ({value}): clients that honour it (awscrt, "
                f"OpenSSL, Python) read that, not {path}",
                file=sys.stderr,
            )


@sandbox_app.command("trust")
def trust(
    state_dir: Annotated[
        Path,
        typer.Option(help="The --state-dir of `sandbox up` (its PKI is created if missing)."),
    ],
    store_root: Annotated[
        Path,
        typer.Option(help="Change the trust store under this directory instead of / (tests)."),
    ] = Path("/"),
) -> None:
    """Add the sandbox's stand-in roots to the system trust store (Debian, Ubuntu).

    Clients that verify servers with the system trust store (the AWS IoT Device
    SDK v2 samples, curl, Python) then trust the sandbox's endpoints. Anyone who
    can read STATE_DIR/pki/private can then impersonate any server to this
    machine: run `ca-migrate sandbox untrust` when done.
    """
    from infra.sandbox.truststore import TrustStoreError, sandbox_anchors
    from infra.sandbox.truststore import trust as install

    pki = _sandbox_pki(state_dir, create=True)
    store = _trust_store(store_root)
    _store_warnings(store)
    try:
        anchors = sandbox_anchors(pki)
        print(f"installing {len(anchors)} sandbox roots in {store.local_dir} ...", flush=True)
        change = install(anchors, store)
    except TrustStoreError as exc:
        raise _fail(str(exc), EXIT_INVALID) from exc
    for anchor in anchors:
        path = store.local_dir / anchor.file_name
        verb = "added" if path in change.added else "already trusted"
        print(f"  {verb}: {path} ({anchor.description}, sha256 {anchor.sha256[:16]}...)")
    if change.update:
        print(f"update-ca-certificates: {change.update}")
    for path, holds in change.readers:
        if holds:
            print(f"  clients given no CA file read {path}: it holds them")
        else:
            print(
                f"warning: {path} (a default CA file of OpenSSL or awscrt) lacks the sandbox "
                f"roots: give such clients SSL_CERT_FILE={change.bundle}",
                file=sys.stderr,
            )
    print(f"{change.bundle} holds the sandbox roots; `ca-migrate sandbox untrust` removes them")


@sandbox_app.command("untrust")
def untrust(
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Remove only this sandbox's roots (default: every one `trust` added)."),
    ] = None,
    store_root: Annotated[
        Path,
        typer.Option(help="Change the trust store under this directory instead of / (tests)."),
    ] = Path("/"),
) -> None:
    """Remove from the system trust store the sandbox roots that `sandbox trust` added."""
    from infra.sandbox.truststore import TrustStoreError, sandbox_anchors
    from infra.sandbox.truststore import untrust as remove

    store = _trust_store(store_root)
    try:
        anchors = None
        if state_dir is not None:
            anchors = sandbox_anchors(_sandbox_pki(state_dir, create=False))
        print(f"removing the sandbox roots `sandbox trust` added in {store.local_dir} ...")
        change = remove(store, anchors)
    except TrustStoreError as exc:
        raise _fail(str(exc), EXIT_INVALID) from exc
    for path in change.removed:
        print(f"  removed: {path}")
    for path in change.kept:
        print(f"  kept (not written by `sandbox trust`): {path}")
    if change.update:
        print(f"update-ca-certificates --fresh: {change.update}")
    if not change.removed:
        print(f"no sandbox root to remove in {store.local_dir}; nothing changed")
    else:
        print(f"{change.bundle} no longer holds them")
