r"""Requests and responses of a REST-JSON AWS service, driven by botocore's own model.

The model gives each operation's method and URI template (routing), where each
input member travels (URI, query string, header, body), and its constraints
(required, min/max, pattern, enum). The sandbox parses and validates every
request with it, so a request AWS would refuse is refused here with an
`InvalidRequestException` whose message has the AWS wording
("1 validation error detected: Value ... at ... failed to satisfy constraint: ...").

Patterns are Java regular expressions. Python's `re` lacks the `\p{...}`
classes, which are translated to close ASCII/`\w` equivalents; a pattern that
still does not compile is not checked (the other constraints still are).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import parse_qs, unquote

import botocore.session
from botocore.model import ListShape, MapShape, OperationModel, Shape, StructureShape

from infra.sandbox.errors import invalid_request

__all__ = ["Route", "Router", "error_status", "parse_request"]

_PROPERTY_CLASSES = {
    r"\p{C}": r"\x00-\x1f\x7f-\x9f",
    r"\p{Cc}": r"\x00-\x1f\x7f-\x9f",
    r"\p{L}": r"\w",  # letters: Python has no letter class; \w is the closest
    r"\p{N}": r"0-9",
    r"\p{Z}": r" \u00a0\u2000-\u200a\u2028\u2029\u202f\u205f\u3000",
    r"\p{Graph}": r"\x21-\x7e",
    r"\p{Print}": r"\x20-\x7e",
    r"\p{Alnum}": r"a-zA-Z0-9",
    r"\p{Punct}": r"!-/:-@\[-`{-~",
}


@cache
def _compile(pattern: str) -> re.Pattern[str] | None:
    translated = pattern
    for java, python in _PROPERTY_CLASSES.items():
        translated = translated.replace(java, python)
    try:
        return re.compile(translated)
    except re.error:
        return None


@cache
def service_model(service: str) -> Any:
    """The botocore model of `service` ("iot" or "iot-jobs-data")."""
    return botocore.session.get_session().get_service_model(service)


@cache
def error_status(service: str, code: str) -> int | None:
    """The HTTP status the service's model gives the error `code`, if it models it.

    The same exception can differ between services: ThrottlingException is 400
    in `iot` and 429 in `iot-jobs-data`.
    """
    model = service_model(service)
    if code not in model.shape_names:
        return None
    status = model.shape_for(code).metadata.get("error", {}).get("httpStatusCode")
    return None if status is None else int(status)


@dataclass(frozen=True, slots=True)
class Route:
    """One operation: its method, URI template as a regex, and model."""

    method: str
    regex: re.Pattern[str]
    literal_weight: int
    operation: OperationModel


class Router:
    """Maps (method, path) to one of the operations the sandbox implements."""

    def __init__(self, service: str, operations: list[str]) -> None:
        model = service_model(service)
        self.service = service
        routes: list[Route] = []
        for name in operations:
            op = model.operation_model(name)
            template = op.http["requestUri"].split("?", 1)[0]
            parts = re.split(r"(\{[^}]+\})", template)
            regex = ""
            weight = 0
            for part in parts:
                if part.startswith("{"):
                    member = part[1:-1]
                    if member.endswith("+"):
                        regex += f"(?P<{member[:-1]}>.+)"
                    else:
                        regex += f"(?P<{member}>[^/]+)"
                else:
                    regex += re.escape(part)
                    weight += len(part)
            routes.append(Route(op.http["method"], re.compile(regex + "/?"), weight, op))
        self._routes = sorted(routes, key=lambda r: -r.literal_weight)

    def match(self, method: str, path: str) -> tuple[OperationModel, dict[str, str]] | None:
        """The operation for this request and its URI parameters, or None."""
        for route in self._routes:
            if route.method != method:
                continue
            found = route.regex.fullmatch(path)
            if found is not None:
                return route.operation, {k: unquote(v) for k, v in found.groupdict().items()}
        return None

    def model_operation(self, method: str, path: str) -> str | None:
        """The name of the model's operation this request is, implemented here or not."""
        found = _model_router(self.service).match(method, path)
        return None if found is None else found[0].name


@cache
def _model_router(service: str) -> Router:
    """A router over every operation of the service's model (to name unimplemented ones)."""
    return Router(service, list(service_model(service).operation_names))


def _convert_query(value: list[str], shape: Shape, name: str) -> Any:
    kind = shape.type_name
    if kind == "list":
        return value
    raw = value[-1]
    if kind in ("integer", "long"):
        try:
            return int(raw)
        except ValueError:
            raise invalid_request(f"{name} must be an integer, got {raw!r}") from None
    if kind == "boolean":
        if raw.lower() not in ("true", "false"):
            raise invalid_request(f"{name} must be true or false, got {raw!r}")
        return raw.lower() == "true"
    if kind in ("double", "float"):
        try:
            return float(raw)
        except ValueError:
            raise invalid_request(f"{name} must be a number, got {raw!r}") from None
    return raw


def parse_request(
    op: OperationModel,
    uri_params: Mapping[str, str],
    query: str,
    headers: Mapping[str, str],
    body: bytes,
) -> dict[str, Any]:
    """The operation's input as a dict keyed by member name, validated against the model."""
    shape = op.input_shape
    params: dict[str, Any] = {}
    if shape is None:
        return params
    parsed_query = parse_qs(query, keep_blank_values=True)
    body_members: dict[str, str] = {}
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if location == "uri":
            if wire in uri_params:
                params[name] = _convert_query([uri_params[wire]], member, name)
        elif location == "querystring":
            if wire in parsed_query:
                params[name] = _convert_query(parsed_query[wire], member, name)
        elif location == "header":
            if wire in headers:
                params[name] = _convert_query([headers[wire]], member, name)
        else:
            body_members[wire] = name
    if body_members and body.strip():
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise invalid_request(f"The request body is not valid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise invalid_request("The request body must be a JSON object")
        for wire, value in document.items():
            if wire in body_members:
                params[body_members[wire]] = value
    errors: list[str] = []
    _validate(params, shape, "", errors)
    if errors:
        count = len(errors)
        noun = "error" if count == 1 else "errors"
        raise invalid_request(f"{count} validation {noun} detected: " + "; ".join(errors))
    return params


def _describe(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 64 else text[:61] + "..."  # noqa: PLR2004


def _validate(value: Any, shape: Shape, path: str, errors: list[str]) -> None:
    kind = shape.type_name
    meta = shape.metadata
    where = path or "request"
    if isinstance(shape, StructureShape):
        if not isinstance(value, dict):
            errors.append(
                f"Value at '{where}' failed to satisfy constraint: Member must be an object"
            )
            return
        errors.extend(
            f"Value null at '{_join(path, required)}' failed to satisfy constraint: "
            "Member must not be null"
            for required in meta.get("required", [])
            if value.get(required) is None
        )
        for name, member_value in value.items():
            if member_value is None or name not in shape.members:
                continue
            _validate(member_value, shape.members[name], _join(path, name), errors)
        return
    if isinstance(shape, ListShape):
        if not isinstance(value, list):
            errors.append(f"Value at '{where}' failed to satisfy constraint: Member must be a list")
            return
        _check_length(value, meta, where, errors)
        for index, item in enumerate(value):
            _validate(item, shape.member, f"{path}.{index + 1}.member", errors)
        return
    if isinstance(shape, MapShape):
        if not isinstance(value, dict):
            errors.append(f"Value at '{where}' failed to satisfy constraint: Member must be a map")
            return
        _check_length(value, meta, where, errors)
        for key, item in value.items():
            _validate(key, shape.key, f"{path}.key", errors)
            _validate(item, shape.value, f"{path}.value", errors)
        return
    if kind == "string":
        if not isinstance(value, str):
            errors.append(
                f"Value at '{where}' failed to satisfy constraint: Member must be a string"
            )
            return
        _check_length(value, meta, where, errors)
        enum = meta.get("enum")
        if enum and value not in enum:
            errors.append(
                f"Value '{_describe(value)}' at '{where}' failed to satisfy constraint: "
                f"Member must satisfy enum value set: [{', '.join(enum)}]"
            )
        pattern = meta.get("pattern")
        if pattern:
            compiled = _compile(pattern)
            if compiled is not None and compiled.fullmatch(value) is None:
                errors.append(
                    f"Value '{_describe(value)}' at '{where}' failed to satisfy constraint: "
                    f"Member must satisfy regular expression pattern: {pattern}"
                )
        return
    if kind in ("integer", "long", "double", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors.append(
                f"Value at '{where}' failed to satisfy constraint: Member must be a number"
            )
            return
        if kind in ("integer", "long") and not float(value).is_integer():
            errors.append(
                f"Value '{value}' at '{where}' failed to satisfy constraint: "
                "Member must be an integer"
            )
        low, high = meta.get("min"), meta.get("max")
        if low is not None and value < low:
            errors.append(
                f"Value '{value}' at '{where}' failed to satisfy constraint: "
                f"Member must have value greater than or equal to {low}"
            )
        if high is not None and value > high:
            errors.append(
                f"Value '{value}' at '{where}' failed to satisfy constraint: "
                f"Member must have value less than or equal to {high}"
            )
        return
    if kind == "boolean" and not isinstance(value, bool):
        errors.append(f"Value at '{where}' failed to satisfy constraint: Member must be a boolean")


def _check_length(value: Any, meta: Mapping[str, Any], where: str, errors: list[str]) -> None:
    low, high = meta.get("min"), meta.get("max")
    size = len(value)
    if low is not None and size < low:
        errors.append(
            f"Value '{_describe(value)}' at '{where}' failed to satisfy constraint: "
            f"Member must have length greater than or equal to {low}"
        )
    if high is not None and size > high:
        errors.append(
            f"Value at '{where}' failed to satisfy constraint: "
            f"Member must have length less than or equal to {high}"
        )


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
