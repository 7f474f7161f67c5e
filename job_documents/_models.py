"""Pydantic models of the `ca-migration/1` wire format; they generate the JSON Schema file.

The models are the operator-side source of truth: `render_schema()` turns them
into the draft 2020-12 schema shipped as `schema/ca-migration-1.schema.json`,
which devices validate against with jsonschema alone. A test keeps the file and
the models in step; regenerate the file with `python -m job_documents._models`.

Invariants the schema carries (and these models enforce identically):
- one document shape per operation, chosen by `operation` (a discriminated union);
- no null anywhere: optional members are absent, never null;
- every string is ASCII by pattern, so the character count AWS limits equals
  the byte count, and canonical JSON is the same in every language.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from job_documents._values import ALPN_MQTT_CA, MAX_ROOTS, SCHEMA_ID

__all__ = [
    "DOCUMENT_ADAPTER",
    "EndpointModel",
    "JobDocumentModel",
    "MigrateDocument",
    "MigrateTrust",
    "ProbeModel",
    "PruneDocument",
    "PruneTrust",
    "RestoreDocument",
    "RootModel",
    "RootRefModel",
    "SignatureModel",
    "render_schema",
]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_URI = "urn:ca-migrate:schema:ca-migration:1"

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ROOT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
REGION_PATTERN = r"^[a-z]{2}(-[a-z]+){1,2}-[0-9]{1,2}$"
HOST_PATTERN = (
    r"^[a-z0-9]{1,63}(-ats\.iot\.[a-z]{2}(-[a-z]+){1,2}-[0-9]{1,2}\.amazonaws\.com(\.cn)?"
    r"|\.ats\.iot\.cn-[a-z]+-[0-9]{1,2}\.amazonaws\.com\.cn)$"
)
PEM_PATTERN = (
    r"^-----BEGIN CERTIFICATE-----\r?\n([A-Za-z0-9+/=]{1,76}\r?\n)+-----END CERTIFICATE-----\r?\n?$"
)
KEY_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
BASE64_PATTERN = r"^[A-Za-z0-9+/]+={0,2}$"
MAX_PEM_CHARS = 16_384


class _Wire(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        # The schema has no null anywhere: an optional member is absent, never null.
        if isinstance(data, dict):
            nulls = sorted(str(key) for key, value in data.items() if value is None)
            if nulls:
                raise ValueError(f"null is not allowed (leave the member out): {', '.join(nulls)}")
        return data


class RootModel(_Wire):
    """A root CA to trust: name, SHA-256 of its DER (lowercase hex), PEM."""

    name: Annotated[str, Field(pattern=ROOT_NAME_PATTERN)]
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN)]
    pem: Annotated[str, Field(pattern=PEM_PATTERN, max_length=MAX_PEM_CHARS)]


class RootRefModel(_Wire):
    """A root CA to stop trusting, by name and SHA-256 of its DER."""

    name: Annotated[str, Field(pattern=ROOT_NAME_PATTERN)]
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN)]


_ENDPOINT_PORT_RULE: dict[str, Any] = {
    "if": {"properties": {"port": {"const": 443}}},
    "then": {"required": ["alpn"]},
    "else": {"not": {"required": ["alpn"]}},
}


class EndpointModel(_Wire):
    """The ATS data endpoint; port 443 needs ALPN x-amzn-mqtt-ca, 8883 takes none."""

    model_config = ConfigDict(json_schema_extra=_ENDPOINT_PORT_RULE)

    host: Annotated[str, Field(pattern=HOST_PATTERN, max_length=253)]
    port: Literal[8883, 443]
    alpn: Annotated[list[Literal["x-amzn-mqtt-ca"]], Field(min_length=1, max_length=1)] | None = (
        None
    )

    @model_validator(mode="after")
    def _alpn_matches_port(self) -> EndpointModel:
        if self.port == 443 and self.alpn is None:  # noqa: PLR2004 - MQTT over 443
            raise ValueError(f"port 443 needs alpn [{ALPN_MQTT_CA!r}]")
        if self.port == 8883 and self.alpn is not None:  # noqa: PLR2004 - MQTT over TLS
            raise ValueError("port 8883 takes no alpn")
        return self


def _integral(value: Any) -> Any:
    # JSON Schema's "integer" includes 2.0; accept exactly what the schema accepts.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class ProbeModel(_Wire):
    """How the device probes the new endpoint before committing."""

    timeout_seconds: Annotated[float, Field(gt=0, le=300)]
    attempts: Annotated[int, Field(ge=1, le=10), BeforeValidator(_integral)]


class SignatureModel(_Wire):
    """A detached signature over canonical_json(document without "signature")."""

    algorithm: Literal["Ed25519", "ECDSA-P256-SHA256"]
    key_id: Annotated[str, Field(pattern=KEY_ID_PATTERN)] | None = None
    value: Annotated[str, Field(pattern=BASE64_PATTERN, max_length=256)]


class MigrateTrust(_Wire):
    """Roots to add; whether to keep the roots the device trusts now (dual trust)."""

    keep_existing: bool = True
    roots: Annotated[list[RootModel], Field(min_length=1, max_length=MAX_ROOTS)]


class PruneTrust(_Wire):
    """Roots to drop from the device's trust store."""

    remove: Annotated[list[RootRefModel], Field(min_length=1, max_length=MAX_ROOTS)]


class _DocumentBase(_Wire):
    schema_: Literal["ca-migration/1"] = Field(alias="schema")
    campaign: Annotated[str, Field(pattern=ID_PATTERN)]
    wave: Annotated[str, Field(pattern=ID_PATTERN)]
    region: Annotated[str, Field(pattern=REGION_PATTERN)]
    probe: ProbeModel
    signature: SignatureModel | None = None


class MigrateDocument(_DocumentBase):
    """Add roots and switch to the ATS endpoint."""

    operation: Literal["migrate"]
    endpoint: EndpointModel
    trust: MigrateTrust


class RestoreDocument(_DocumentBase):
    """Go back to the endpoint and trust backed up before the last migrate."""

    operation: Literal["restore"]


class PruneDocument(_DocumentBase):
    """Drop trust anchors no longer needed."""

    operation: Literal["prune"]
    trust: PruneTrust


JobDocumentModel = Annotated[
    MigrateDocument | RestoreDocument | PruneDocument, Field(discriminator="operation")
]
DOCUMENT_ADAPTER: TypeAdapter[MigrateDocument | RestoreDocument | PruneDocument] = TypeAdapter(
    JobDocumentModel
)


class _WireSchema(GenerateJsonSchema):
    """Draft 2020-12 with no nulls: optional members are simply absent on the wire."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        result = super().default_schema(schema)
        if result.get("default", ...) is None:
            del result["default"]
        return result

    def generate(self, schema: core_schema.CoreSchema, mode: Any = "validation") -> JsonSchemaValue:
        body = super().generate(schema, mode=mode)
        return {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": SCHEMA_URI,
            "title": SCHEMA_ID,
            "description": "A ca-migrate job document: migrate, restore or prune a device's "
            "MQTT endpoint and trust anchors (AWS IoT Jobs document).",
            **body,
        }


def render_schema() -> dict[str, Any]:
    """The JSON Schema the models describe (what the packaged schema file must equal)."""
    return DOCUMENT_ADAPTER.json_schema(by_alias=True, schema_generator=_WireSchema)


def render_schema_text() -> str:
    """`render_schema()` as the packaged file's text (indented, sorted, newline-terminated)."""
    return json.dumps(render_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_schema_text())
