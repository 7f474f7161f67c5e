"""What the device reports to its `ca-migration` named shadow, and when.

The trust state (`endpoint`, `port`, `bundleSha256`, `roots` by catalog name,
`rootSha256`, `phase`, `agentVersion`, `lastJob`) goes to the shadow's
reported section when the agent starts and after every transaction, only when
it differs from what the shadow already reports: the agent reads the shadow
first (GetThingShadow over MQTT) on channels that can (`ShadowReader`), and
writes when the read fails or differs. Fleet indexing over this shadow is what
`ca-migrate census` counts, so a device that never ran a job is visible too.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

import structlog

from device_handler.channel import JobsChannel
from device_handler.errors import ChannelError
from device_handler.snapshot import Snapshot
from device_handler.transaction import Journal
from device_handler.trust import TrustBundle, bundle_sha256

__all__ = ["AGENT_VERSION", "ShadowReader", "publish_if_changed", "trust_state"]

log = structlog.get_logger(__name__)


def _agent_version() -> str:
    try:
        return metadata.version("ca-migrate")
    except metadata.PackageNotFoundError:
        return "unknown"


AGENT_VERSION = _agent_version()


@runtime_checkable
class ShadowReader(Protocol):
    """A channel that can read back a named shadow's reported state."""

    def reported_state(self, shadow_name: str) -> Mapping[str, Any] | None:
        """The shadow's `state.reported`, or None when the shadow does not exist."""
        ...


def root_name(fingerprint: str, names: Mapping[str, str]) -> str:
    """A root's catalog name; `sha256:<first 16 hex>` for a root the catalog does not know."""
    return names.get(fingerprint, f"sha256:{fingerprint[:16]}")


def trust_state(live: Snapshot, journal: Journal, root_names: Mapping[str, str]) -> dict[str, Any]:
    """What the device trusts and where it connects, as reported to the shadow."""
    fingerprints = list(TrustBundle.parse(live.bundle).fingerprints())
    return {
        "endpoint": live.endpoint.host,
        "port": live.endpoint.port,
        "bundleSha256": bundle_sha256(live.bundle),
        "roots": [root_name(f, root_names) for f in fingerprints],
        "rootSha256": fingerprints,
        "phase": str(journal.phase),
        "agentVersion": AGENT_VERSION,
        "lastJob": {
            "jobId": journal.last_job_id,
            "status": journal.last_status,
            "at": journal.last_at,
        }
        if journal.last_job_id
        else None,
    }


def _same(state: Mapping[str, Any], reported: Mapping[str, Any]) -> bool:
    # A null in an update deletes the key, so an absent key reads back as None.
    return all(reported.get(key) == value for key, value in state.items())


def publish_if_changed(channel: JobsChannel, shadow_name: str, state: Mapping[str, Any]) -> bool:
    """Write `state` to the shadow unless it already reports it; True when written."""
    if isinstance(channel, ShadowReader):
        try:
            reported = channel.reported_state(shadow_name)
        except ChannelError as exc:
            log.info("shadow_not_read", error=str(exc))
        else:
            if reported is not None and _same(state, reported):
                log.debug("shadow_unchanged", shadow=shadow_name)
                return False
    channel.update_shadow(shadow_name, state)
    return True
