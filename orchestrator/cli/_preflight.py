"""`plan` and `start`'s pre-flight of the new endpoint, `--skip-endpoint-check` and `--connect-to`.

The check itself is `orchestrator.endpoint_check`; this module turns the two
options into the `EndpointPreflight` the reconciler runs before it stores a
campaign, says on stderr what it is doing, and makes a skipped check loud: a
warning on stderr every time and an `endpoint-check-skipped` event in the
campaign's log (`ca-migrate events`, the report), as a passed check leaves an
`endpoint-checked` event with what it verified.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Final

import typer

from job_documents import Catalog
from orchestrator.endpoint_check import TrustedRoot, check_endpoint, parse_connect_to
from orchestrator.model import CampaignSpec, Event, EventKind

__all__ = [
    "CONNECT_TO_ENV",
    "ConnectToOption",
    "EndpointCheck",
    "SkipEndpointCheckOption",
    "warn_skipped",
]

#: `--connect-to`'s variable (space-separated entries): `ca-migrate sandbox up` writes it.
CONNECT_TO_ENV: Final = "CA_MIGRATE_CONNECT_TO"

SkipEndpointCheckOption = Annotated[
    bool,
    typer.Option(
        "--skip-endpoint-check",
        help="Do not check that the new endpoint serves a certificate chaining to the roots the "
        "campaign pushes (for operators without network access to it). Warned about loudly and "
        "recorded in the campaign's events.",
    ),
]
ConnectToOption = Annotated[
    list[str] | None,
    typer.Option(
        "--connect-to",
        metavar="HOST:PORT=ADDRESS:PORT",
        envvar=CONNECT_TO_ENV,
        help="For the endpoint check, connect to ADDRESS:PORT instead of the endpoint HOST:PORT "
        "(SNI and verification keep HOST), as curl's --connect-to. Repeatable; "
        "`ca-migrate sandbox up` sets it for its listeners.",
    ),
]


@dataclass(frozen=True, slots=True)
class EndpointCheck:
    """The operator's choice for this command: check (where to connect), or skip loudly."""

    skip: bool = False
    connect_to: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        parse_connect_to(self.connect_to)  # a malformed entry is exit 2 before any AWS call

    def __call__(self, spec: CampaignSpec, hosts: Mapping[str, str], catalog: Catalog) -> Event:
        """Check each region's host with the roots `spec` adds; the event that records it."""
        roots = tuple(TrustedRoot(r.name, r.pem) for r in map(catalog.get, spec.trust.add))
        names = ", ".join(r.name for r in roots)
        port = spec.endpoint_port
        distinct = tuple(dict.fromkeys(hosts.values()))  # regions may share an explicit host
        targets = [f"{host}:{port}" for host in distinct]
        data: dict[str, object] = {"roots": [r.name for r in roots], "port": port}
        if self.skip:
            warn_skipped(", ".join(targets), names)
            return Event(
                kind=EventKind.ENDPOINT_CHECK_SKIPPED,
                reason=f"--skip-endpoint-check: nobody checked that {', '.join(targets)} "
                f"serve{'s' if len(targets) == 1 else ''} a certificate chaining to {names}",
                data=data | {"endpoints": [{"host": h, "port": port} for h in distinct]},
            )
        connect_to = parse_connect_to(self.connect_to)
        proofs = []
        for host in distinct:
            print(
                f"checking the new endpoint {host}:{port} with the roots {names} ...",
                file=sys.stderr,
            )
            proof = check_endpoint(host, port, roots, connect_to=connect_to)
            print(
                f"endpoint check passed: {proof.describe()}; verified with {names}", file=sys.stderr
            )
            proofs.append(proof)
        seen = "; ".join(p.describe() for p in proofs)
        return Event(
            kind=EventKind.ENDPOINT_CHECKED,
            reason=f"{seen}: verified with the roots the campaign adds ({names}), for the "
            "endpoint's name",
            data=data | {"endpoints": [p.as_dict() for p in proofs]},
        )


def warn_skipped(target: str, names: str) -> None:
    """The warning every skipped check prints: what was not verified, and what it risks."""
    typer.secho(
        f"WARNING: ENDPOINT CHECK SKIPPED (--skip-endpoint-check). Nobody verified that {target} "
        f"serves a certificate chaining to {names}. If it does not, every device of every "
        "wave fails its probe and rolls back. Run `ca-migrate plan` where the endpoint is "
        "reachable to check it.",
        fg=typer.colors.RED,
        bold=True,
        err=True,
    )
