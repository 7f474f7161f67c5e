r"""The packaged JSON Schema of `ca-migration/1` and the jsonschema validators built on it.

JSON Schema patterns follow ECMA-262, where `$` ends the input; Python's `$`
also matches before a final newline. The validators here translate a trailing
`$` to `\Z` so a value like "wave-1\n" is refused exactly as other languages
(and the pydantic models) refuse it.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import extend

__all__ = ["document_validator", "load_schema", "operation_validators", "schema_path"]

_SCHEMA_FILE = "ca-migration-1.schema.json"


def schema_path() -> Path:
    """Where the packaged schema file is (for devices that copy it, or other languages)."""
    return Path(str(resources.files("job_documents").joinpath("schema", _SCHEMA_FILE)))


@cache
def _schema() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(schema_path().read_text(encoding="utf-8"))
    return parsed


def load_schema() -> dict[str, Any]:
    """The packaged schema (a fresh copy the caller may change)."""
    return copy.deepcopy(_schema())


@cache
def _compile(pattern: str) -> re.Pattern[str]:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _ecma_pattern(
    validator: Validator, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    del validator, schema
    if isinstance(instance, str) and _compile(pattern).search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


# The stubs leave `extend` untyped; it returns a validator class.
_Validator: type[Validator] = extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"pattern": _ecma_pattern}
)


@cache
def document_validator() -> Validator:
    """A validator for the whole schema (any operation)."""
    validator: Validator = _Validator(_schema())
    return validator


@cache
def operation_validators() -> dict[str, Validator]:
    """One validator per operation, rooted at that operation's document shape.

    Validating against the chosen branch gives precise messages ("'endpoint' is a
    required property") where the full oneOf would only say "not valid under any".
    """
    schema = _schema()
    mapping: dict[str, str] = schema["discriminator"]["mapping"]
    validators: dict[str, Validator] = {}
    for operation, ref in mapping.items():
        rooted = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": ref}
        validators[operation] = _Validator(rooted)
    return validators
