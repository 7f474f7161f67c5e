"""What `plan` says about signing and the port devices connect on (text lines and JSON)."""

from __future__ import annotations

from typing import Any

from orchestrator.model import CampaignSpec

__all__ = ["signing_lines", "signing_plan"]

_ALPN_PORT = 443


def signing_plan(spec: CampaignSpec) -> dict[str, Any]:
    """The `signing` member of `plan --output json`: whether documents are signed, and how."""
    if spec.signing is None:
        return {"signed": False}
    return {
        "signed": True,
        "key_id": spec.signing.key_id,
        "source": "kms" if spec.signing.kms_key is not None else "key-file",
        "key": spec.signing.kms_key or spec.signing.key_file,
    }


def signing_lines(spec: CampaignSpec) -> list[str]:
    """`plan`'s text lines about the port devices connect on and about signing."""
    port = (
        "port 443 (MQTT with ALPN x-amzn-mqtt-ca)"
        if spec.endpoint_port == _ALPN_PORT
        else f"port {spec.endpoint_port}"
    )
    if spec.signing is None:
        return [f"devices connect on {port}", "documents are NOT signed"]
    return [
        f"devices connect on {port}",
        f"documents are signed: key id {spec.signing.key_id}, {spec.signing.source}",
    ]
