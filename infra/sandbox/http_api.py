"""The sandbox's HTTP front ends: the `iot` control plane (+ admin API) and `iot-jobs-data`.

Both speak REST-JSON as botocore expects: requests are routed and validated
with botocore's own service model (`infra.sandbox.botocore_api`), errors carry the
exception name in `x-amzn-ErrorType` and `{"message": ...}` in the body, so
boto3 and the AWS CLI raise the right exception class. Request signatures are
accepted without being checked.

A sandbox may serve several regions, each with its own engine. AWS tells them apart
by host; here every request goes to the engine of the region its SigV4 credential
scope names (`infra.sandbox.sigv4`). A request that names no region goes to the
first region; so does every request of a single-region sandbox, whatever region it
was signed for (as before regions were added). A multi-region sandbox refuses a
region it does not serve (`decisions.UNSERVED_REGION_ERROR`).

The two services share URI paths (`/things/{thingName}/jobs/{jobId}`), so each
listens on its own port. The admin API (`/_sandbox/...`, sandbox-only) shares
the control plane's port and is never subject to fault injection.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import structlog
from botocore.model import OperationModel

from infra.sandbox import decisions as d
from infra.sandbox import render
from infra.sandbox.botocore_api import Router, error_status, parse_request
from infra.sandbox.dataplane import DataPlaneError
from infra.sandbox.engine import JobsEngine
from infra.sandbox.errors import ServiceError, invalid_request, not_found
from infra.sandbox.faults import FaultInjector
from infra.sandbox.sigv4 import signed_region

__all__ = [
    "CONTROL_PLANE_OPERATIONS",
    "JOBS_DATA_OPERATIONS",
    "AdminHooks",
    "HttpFrontEnd",
]

log = structlog.get_logger(__name__)

CONTROL_PLANE_OPERATIONS: dict[str, str] = {
    "DescribeEndpoint": "describe_endpoint",
    "CreateThing": "create_thing",
    "DescribeThing": "describe_thing",
    "UpdateThing": "update_thing",
    "ListThings": "list_things",
    "DeleteThing": "delete_thing",
    "CreateThingGroup": "create_thing_group",
    "DescribeThingGroup": "describe_thing_group",
    "AddThingToThingGroup": "add_thing_to_thing_group",
    "RemoveThingFromThingGroup": "remove_thing_from_thing_group",
    "ListThingsInThingGroup": "list_things_in_thing_group",
    # Certificates as principals (engine/_certificates.py, engine/_principals.py)
    "CreateKeysAndCertificate": "create_keys_and_certificate",
    "RegisterCertificate": "register_certificate",
    "RegisterCertificateWithoutCA": "register_certificate_without_ca",
    "DescribeCertificate": "describe_certificate",
    "ListCertificates": "list_certificates",
    "UpdateCertificate": "update_certificate",
    "DeleteCertificate": "delete_certificate",
    "AttachThingPrincipal": "attach_thing_principal",
    "DetachThingPrincipal": "detach_thing_principal",
    "ListThingPrincipals": "list_thing_principals",
    "ListThingPrincipalsV2": "list_thing_principals_v2",
    "ListPrincipalThings": "list_principal_things",
    "ListThingGroups": "list_thing_groups",
    "CreateDynamicThingGroup": "create_dynamic_thing_group",
    "UpdateDynamicThingGroup": "update_dynamic_thing_group",
    "DeleteDynamicThingGroup": "delete_dynamic_thing_group",
    "CreateJob": "create_job",
    "DescribeJob": "describe_job",
    "UpdateJob": "update_job",
    "ListJobs": "list_jobs",
    "ListJobExecutionsForJob": "list_job_executions_for_job",
    "ListJobExecutionsForThing": "list_job_executions_for_thing",
    "DescribeJobExecution": "describe_job_execution",
    "GetJobDocument": "get_job_document",
    "CancelJob": "cancel_job",
    "CancelJobExecution": "cancel_job_execution",
    "DeleteJob": "delete_job",
    # Fleet indexing (infra/sandbox/indexing)
    "GetIndexingConfiguration": "get_indexing_configuration",
    "UpdateIndexingConfiguration": "update_indexing_configuration",
    "SearchIndex": "search_index",
    "GetStatistics": "get_statistics",
    "GetBucketsAggregation": "get_buckets_aggregation",
}

JOBS_DATA_OPERATIONS = [
    "GetPendingJobExecutions",
    "StartNextPendingJobExecution",
    "DescribeJobExecution",
    "UpdateJobExecution",
]

# How device-side rejection codes surface as iot-jobs-data exceptions. The
# UpdateJobExecution model lists no conflict exception, so VersionMismatch is
# reported as InvalidStateTransitionException (sandbox decides).
_DATA_PLANE_ERRORS: dict[str, tuple[str, int]] = {
    "InvalidRequest": ("InvalidRequestException", 400),
    "InvalidJson": ("InvalidRequestException", 400),
    "InvalidTopic": ("InvalidRequestException", 400),
    "ResourceNotFound": ("ResourceNotFoundException", 404),
    "InvalidStateTransition": ("InvalidStateTransitionException", 409),
    "VersionMismatch": ("InvalidStateTransitionException", 409),
    "TerminalStateReached": ("TerminalStateException", 410),
    "RequestThrottled": ("ThrottlingException", 429),
    "InternalError": ("InternalServerException", 500),
}


class AdminHooks(Protocol):
    """What the admin API asks of the running sandbox beyond the engine."""

    def describe(self) -> dict[str, Any]:
        """The `sandbox up --output json` object."""
        ...

    def shadow(
        self, thing_name: str, shadow_name: str, region: str | None = None
    ) -> dict[str, Any] | None:
        """A named shadow's document, if the region's MQTT data plane keeps shadows."""
        ...

    def issue_credentials(
        self, thing_names: list[str], region: str | None = None
    ) -> dict[str, dict[str, str]]:
        """Device certificate and key paths per thing of a region, from the sandbox PKI."""
        ...


_Handler = Callable[[str, str, Mapping[str, str], bytes], tuple[int, dict[str, str], bytes]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handle: _Handler) -> None:
        self.handle_request_bytes = handle
        super().__init__(address, _RequestHandler)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    _methods: ClassVar[tuple[str, ...]] = ("GET", "PUT", "POST", "DELETE", "PATCH", "HEAD")

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm
        # and the client's delayed ACK add ~40 ms to every call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, payload = self.server.handle_request_bytes(
            self.command, self.path, headers, body
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-amzn-RequestId", "sandbox")
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _serve  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Requests are not logged line by line (structlog events cover what matters)."""


def _error(exc: ServiceError, service: str = "iot") -> tuple[int, dict[str, str], bytes]:
    """An error response, with the HTTP status the service's model gives the exception."""
    body = {"message": exc.message, "code": exc.code}
    status = error_status(service, exc.code) or exc.status
    return status, {"x-amzn-ErrorType": exc.code}, json.dumps(body).encode()


def _ok(payload: Mapping[str, Any]) -> tuple[int, dict[str, str], bytes]:
    clean = {k: v for k, v in payload.items() if v is not None}
    return 200, {}, json.dumps(clean).encode()


class HttpFrontEnd:
    """Runs the control-plane and jobs-data HTTP servers on 127.0.0.1."""

    def __init__(
        self,
        engines: JobsEngine | Mapping[str, JobsEngine],
        faults: FaultInjector,
        *,
        admin: AdminHooks | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        default_region: str | None = None,
    ) -> None:
        if isinstance(engines, JobsEngine):
            engines = {engines.region: engines}
        if not engines:
            raise ValueError("an HTTP front end needs at least one region's engine")
        self.engines = dict(engines)
        self.default_region = default_region or next(iter(self.engines))
        self.engine = self.engines[self.default_region]
        self.faults = faults
        self.admin = admin
        self._iot = Router("iot", list(CONTROL_PLANE_OPERATIONS))
        self._jobs_data = Router("iot-jobs-data", JOBS_DATA_OPERATIONS)
        self._control = _Server((host, port), self._handle_control)
        self._data = _Server((host, 0), self._handle_jobs_data)
        self._threads: list[threading.Thread] = []

    @property
    def control_plane_url(self) -> str:
        host, port = self._control.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def jobs_data_url(self) -> str:
        host, port = self._data.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        for name, server in (("control", self._control), ("jobs-data", self._data)):
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"sandbox-http-{name}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for server in (self._control, self._data):
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    # ----------------------------------------------------------- control plane
    def _handle_control(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(raw_path)
        if split.path.startswith("/_sandbox"):
            try:
                return _ok(self._admin(method, split.path, split.query, body))
            except ServiceError as exc:
                return _error(exc)
        try:
            op, uri_params = _route(self._iot, method, split.path)
            engine = self._engine_for(signed_region(headers, split.query))
            self.faults.before_call(op.name)
            params = parse_request(op, uri_params, split.query, headers, body)
            handler = getattr(engine, CONTROL_PLANE_OPERATIONS[op.name])
            return _ok(handler(params))
        except ServiceError as exc:
            return _error(exc)
        except Exception:
            log.exception("control_plane_internal_error", method=method, path=split.path)
            return _error(
                ServiceError("InternalFailureException", "sandbox internal error; see its log", 500)
            )

    # ---------------------------------------------------------------- jobs data
    def _handle_jobs_data(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(raw_path)
        try:
            op, uri_params = _route(self._jobs_data, method, split.path)
            engine = self._engine_for(signed_region(headers, split.query))
            self.faults.before_call()
            params = parse_request(op, uri_params, split.query, headers, body)
            return _ok(_jobs_data_call(engine, op.name, params))
        except DataPlaneError as exc:
            code, status = _DATA_PLANE_ERRORS.get(exc.code, ("InvalidRequestException", 400))
            error = ServiceError(code, exc.message, status)
            status_code, extra, payload = _error(error, "iot-jobs-data")
            if exc.execution_state is not None:
                document = json.loads(payload)
                document["executionState"] = render.execution_state(
                    exc.execution_state, empty_details=True
                )
                payload = json.dumps(document).encode()
            return status_code, extra, payload
        except ServiceError as exc:
            return _error(exc, "iot-jobs-data")
        except Exception:
            log.exception("jobs_data_internal_error", method=method, path=split.path)
            return _error(
                ServiceError("InternalServerException", "sandbox internal error; see its log", 500),
                "iot-jobs-data",
            )

    # ------------------------------------------------------------------ regions
    def _engine_for(self, region: str | None) -> JobsEngine:
        """The engine of the region a request was signed for (see the module docstring)."""
        if region is None or len(self.engines) == 1:
            return self.engine
        engine = self.engines.get(region)
        if engine is None:
            code, status = d.UNSERVED_REGION_ERROR
            raise ServiceError(
                code,
                f"this sandbox serves {', '.join(self.engines)}, not {region}: sign for one of "
                f"them (--region / AWS_REGION) or start the sandbox with --region {region}",
                status,
            )
        return engine

    def _admin_engine(self, args: Mapping[str, Any]) -> JobsEngine:
        """The engine an admin request names with `region` (as a signed request would)."""
        region = args.get("region")
        if region is not None and not isinstance(region, str):
            raise invalid_request('"region" must be a region name')
        return self._engine_for(region)

    # -------------------------------------------------------------------- admin
    def _admin(self, method: str, path: str, query: str, body: bytes) -> dict[str, Any]:
        parts = [unquote(p) for p in path.split("/") if p][1:]
        args = {k: v[-1] for k, v in parse_qs(query).items()}
        payload: dict[str, Any] = {}
        if body.strip():
            try:
                loaded = json.loads(body)
            except ValueError as exc:
                raise invalid_request(f"admin request body is not JSON: {exc}") from exc
            if not isinstance(loaded, dict):
                raise invalid_request("admin request body must be a JSON object")
            payload = loaded
        engine = self._admin_engine(args)
        now = engine.clock.now().timestamp()
        route = (method, parts[0] if parts else "")
        if route == ("GET", ""):
            if self.admin is None:
                return {
                    "controlPlaneUrl": self.control_plane_url,
                    "jobsDataUrl": self.jobs_data_url,
                }
            return self.admin.describe()
        if route == ("GET", "executions"):
            return {
                "executions": engine.execution_history(
                    job_id=args.get("jobId"), thing_name=args.get("thingName")
                )
            }
        if route == ("GET", "faults"):
            return self.faults.settings.to_wire(now)
        if route == ("PUT", "faults"):
            settings = self.faults.update(
                throttle_rate=_number(payload, "throttleRate"),
                latency_seconds=_number(payload, "latencySeconds"),
                unavailable_seconds=_number(payload, "unavailableSeconds"),
                enforce_quotas=_flag(payload, "enforceQuotas"),
            )
            return settings.to_wire(now)
        if route == ("GET", "clock"):
            return {"now": now, "timeScale": engine.time_scale}
        if route == ("POST", "clock"):
            seconds = _number(payload, "advanceSeconds")
            if seconds is None:
                raise invalid_request('give {"advanceSeconds": N}')
            # One clock for every region: jump it once, then let each region apply what fell due.
            moved = self.engine.advance(seconds)
            for other in self.engines.values():
                if other is not self.engine:
                    other.advance(0)
            return {"now": moved, "timeScale": engine.time_scale}
        if route == ("GET", "jobs") and len(parts) == 3 and parts[2] == "counts":  # noqa: PLR2004
            return {"counts": engine.counts(parts[1]), "recount": engine.recount(parts[1])}
        if route == ("GET", "shadows") and len(parts) == 3:  # noqa: PLR2004
            if self.admin is None:
                raise not_found("this sandbox has no MQTT data plane, so no shadows")
            document = self.admin.shadow(parts[1], parts[2], engine.region)
            if document is None:
                raise not_found(f"No shadow {parts[2]} for thing {parts[1]}")
            return {"shadow": document}
        if route == ("POST", "credentials"):
            names = payload.get("things")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise invalid_request('give {"things": ["thing-name", ...]}')
            if self.admin is None:
                raise invalid_request("this sandbox has no PKI; start it with the MQTT data plane")
            region = self._admin_engine(payload).region
            return {"credentials": self.admin.issue_credentials(names, region)}
        raise not_found(
            f"No sandbox admin route {method} {path}; see docs/sandbox.md for the admin API"
        )


def _number(payload: Mapping[str, Any], key: str) -> float | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_request(f"{key} must be a number")
    return float(value)


def _route(router: Router, method: str, path: str) -> tuple[OperationModel, dict[str, str]]:
    found = router.match(method, path)
    if found is None:
        raise _unknown(method, path, router)
    return found


def _flag(payload: Mapping[str, Any], key: str) -> bool | None:
    value = payload.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise invalid_request(f"{key} must be true or false")


def _unknown(method: str, path: str, router: Router) -> ServiceError:
    """UnknownOperationException for every request the sandbox does not serve.

    AWS answers a request it has no operation for with UnknownOperationException;
    the sandbox answers the same for an operation of the model it does not
    implement (naming it), so no unimplemented call looks like a bad request.
    """
    operation = router.model_operation(method, path)
    what = f"{operation} ({method} {path})" if operation else f"{method} {path}"
    return ServiceError(
        "UnknownOperationException",
        f"The sandbox does not implement {what} of {router.service}; "
        "see docs/sandbox.md for the operations it serves",
        404,
    )


def _jobs_data_call(
    engine: JobsEngine, operation: str, params: Mapping[str, Any]
) -> dict[str, Any]:
    thing = params["thingName"]
    if operation == "GetPendingJobExecutions":
        pending = engine.get_pending(thing)
        return {
            "inProgressJobs": [render.summary(s) for s in pending.in_progress],
            "queuedJobs": [render.summary(s) for s in pending.queued],
        }
    if operation == "StartNextPendingJobExecution":
        snapshot = engine.start_next(
            thing,
            status_details=params.get("statusDetails"),
            step_timeout_minutes=params.get("stepTimeoutInMinutes"),
            via="https",
        )
        return (
            {}
            if snapshot is None
            else {"execution": render.data_execution(snapshot, include_document=True)}
        )
    if operation == "DescribeJobExecution":
        snapshot = engine.describe_execution(
            thing, params["jobId"], execution_number=params.get("executionNumber")
        )
        # "Unless set to false, the response contains the job document."
        include = bool(params.get("includeJobDocument", True))
        return {"execution": render.data_execution(snapshot, include_document=include)}
    snapshot = engine.update_execution(
        thing,
        params["jobId"],
        status=params["status"],
        status_details=params.get("statusDetails"),
        expected_version=params.get("expectedVersion"),
        execution_number=params.get("executionNumber"),
        step_timeout_minutes=params.get("stepTimeoutInMinutes"),
        via="https",
    )
    out: dict[str, Any] = {}
    if params.get("includeJobExecutionState"):
        out["executionState"] = render.execution_state(snapshot, empty_details=True)
    if params.get("includeJobDocument"):
        out["jobDocument"] = snapshot.job_document
    return out
