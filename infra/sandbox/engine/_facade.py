"""`JobsEngine`: the facade every front end, test and benchmark holds.

Each method delegates to the mechanism module that owns it; the facade holds
no logic of its own, so the public API stays one class while the mechanisms
live apart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from infra.sandbox import decisions as d
from infra.sandbox.dataplane import ExecutionSnapshot, PendingJobs
from infra.sandbox.engine import (
    _certificates,
    _control,
    _devices,
    _dynamic,
    _indexing,
    _inspection,
    _persistence,
    _principals,
    _registry,
    _timers,
)
from infra.sandbox.engine._identity import CertificateIssuer, ConnectPolicy
from infra.sandbox.engine._state import EngineState
from infra.sandbox.shadows import ShadowTable
from job_documents.clock import Clock


class JobsEngine:
    """AWS IoT Jobs for one account and region, in memory. Thread-safe."""

    def __init__(
        self,
        *,
        clock: Clock,
        region: str = d.DEFAULT_REGION,
        account_id: str = d.ACCOUNT_ID,
        time_scale: float = 1.0,
        cancel_delay: float = d.CANCEL_PROPAGATION_SECONDS,
        delete_delay: float = d.DELETION_SECONDS,
        default_per_minute: int | None = d.DEFAULT_PER_MINUTE,
    ) -> None:
        """An empty service on `clock`.

        `cancel_delay` / `delete_delay` are the sandbox seconds CancelJob and
        DeleteJob take to complete (AWS is eventually consistent; 0: immediate).
        `default_per_minute` paces jobs created without a rollout configuration
        (AWS's default, 1000 things a minute); None notifies all their targets at
        once, for tests that need instant fan-out.
        """
        if cancel_delay < 0 or delete_delay < 0:
            raise ValueError("cancel_delay and delete_delay are zero or more seconds")
        if default_per_minute is not None and not 1 <= default_per_minute <= d.MAX_PER_MINUTE:
            raise ValueError(
                f"default_per_minute is 1-{d.MAX_PER_MINUTE} things a minute, "
                "or None for all at once"
            )
        self._state = EngineState(
            clock=clock,
            region=region,
            account_id=account_id,
            time_scale=time_scale,
            cancel_delay=cancel_delay,
            delete_delay=delete_delay,
            default_per_minute=default_per_minute,
        )

    # ------------------------------------------------------------------ basics
    @property
    def clock(self) -> Clock:
        return self._state.clock

    @property
    def region(self) -> str:
        return self._state.region

    @property
    def account_id(self) -> str:
        return self._state.account_id

    @property
    def partition(self) -> str:
        return self._state.partition

    @property
    def time_scale(self) -> float:
        return self._state.time_scale

    @property
    def revision(self) -> int:
        """Rises on every change; persistence watches it."""
        return self._state.revision

    @property
    def changes_event(self) -> threading.Event | None:
        """Set on every change, when given."""
        return self._state.changes_event

    @changes_event.setter
    def changes_event(self, event: threading.Event | None) -> None:
        self._state.changes_event = event

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """Call `callback(thing_name)` after changes that may alter that thing's pending jobs."""
        with self._state.lock:
            self._state.subscribers.append(callback)

    # --------------------------------------------------------------- scheduler
    def next_deadline(self) -> float | None:
        """The sandbox time of the next time-driven change, if any."""
        return _timers.next_deadline(self._state)

    def process_due(self) -> None:
        """Apply every rollout batch and timeout due by now; notify subscribers."""
        _timers.process_due_now(self._state)

    def run_scheduler(self, stop: threading.Event) -> None:
        """Body of the scheduler thread: sleep until the next deadline or a change, then act."""
        _timers.run_scheduler(self._state, stop)

    def stop_scheduler(self) -> None:
        """Wake the scheduler thread so it can see its stop event."""
        _timers.stop_scheduler(self._state)

    def advance(self, seconds: float) -> float:
        """Jump the clock forward and apply what fell due; returns the new epoch time."""
        return _timers.advance(self._state, seconds)

    # --------------------------------------------------------- device data plane
    def get_pending(self, thing_name: str) -> PendingJobs:
        """The `get` topic / GetPendingJobExecutions."""
        return _devices.get_pending(self._state, thing_name)

    def start_next(
        self,
        thing_name: str,
        *,
        status_details: Mapping[str, str] | None,
        step_timeout_minutes: int | None,
        via: str,
    ) -> ExecutionSnapshot | None:
        """`start-next` / StartNextPendingJobExecution: None when nothing is pending."""
        return _devices.start_next(
            self._state,
            thing_name,
            status_details=status_details,
            step_timeout_minutes=step_timeout_minutes,
            via=via,
        )

    def describe_execution(
        self, thing_name: str, job_id: str, *, execution_number: int | None
    ) -> ExecutionSnapshot:
        """`{jobId}/get` / DescribeJobExecution; `job_id` may be "$next"; ResourceNotFound."""
        return _devices.describe_execution(
            self._state, thing_name, job_id, execution_number=execution_number
        )

    def update_execution(
        self,
        thing_name: str,
        job_id: str,
        *,
        status: str,
        status_details: Mapping[str, str] | None,
        expected_version: int | None,
        execution_number: int | None,
        step_timeout_minutes: int | None,
        via: str,
    ) -> ExecutionSnapshot:
        """`{jobId}/update` / UpdateJobExecution; returns the execution after the change."""
        return _devices.update_execution(
            self._state,
            thing_name,
            job_id,
            status=status,
            status_details=status_details,
            expected_version=expected_version,
            execution_number=execution_number,
            step_timeout_minutes=step_timeout_minutes,
            via=via,
        )

    # ------------------------------------------------------------------ things
    def describe_endpoint(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _registry.describe_endpoint(self._state, params)

    def create_thing(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _registry.create_thing(self._state, params)

    def create_things(self, names: Sequence[str]) -> None:
        """Bulk CreateThing for simulations and the benchmark (same effect, one lock)."""
        _registry.create_things(self._state, names)

    def describe_thing(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _registry.describe_thing(self._state, params)

    def update_thing(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _registry.update_thing(self._state, params)

    def list_things(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _registry.list_things(self._state, params)

    def delete_thing(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _registry.delete_thing(self._state, params)

    def create_thing_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _registry.create_thing_group(self._state, params)

    def describe_thing_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _registry.describe_thing_group(self._state, params)

    def add_thing_to_thing_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _registry.add_thing_to_thing_group(self._state, params)

    def remove_thing_from_thing_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _registry.remove_thing_from_thing_group(self._state, params)

    def list_things_in_thing_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _registry.list_things_in_thing_group(self._state, params)

    def create_dynamic_thing_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _dynamic.create_dynamic_thing_group(self._state, params)

    def update_dynamic_thing_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _dynamic.update_dynamic_thing_group(self._state, params)

    def delete_dynamic_thing_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _dynamic.delete_dynamic_thing_group(self._state, params)

    def list_thing_groups(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _dynamic.list_thing_groups(self._state, params)

    def add_things_to_group(self, group_name: str, names: Sequence[str]) -> None:
        """Bulk AddThingToThingGroup for simulations and the benchmark."""
        for name in names:
            self.add_thing_to_thing_group({"thingGroupName": group_name, "thingName": name})

    # ------------------------------------------------ certificates as principals
    def create_keys_and_certificate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _certificates.create_keys_and_certificate(self._state, params)

    def register_certificate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _certificates.register_certificate(self._state, params)

    def register_certificate_without_ca(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _certificates.register_certificate_without_ca(self._state, params)

    def describe_certificate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _certificates.describe_certificate(self._state, params)

    def list_certificates(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _certificates.list_certificates(self._state, params)

    def update_certificate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _certificates.update_certificate(self._state, params)

    def delete_certificate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _certificates.delete_certificate(self._state, params)

    def attach_thing_principal(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _principals.attach_thing_principal(self._state, params)

    def detach_thing_principal(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _principals.detach_thing_principal(self._state, params)

    def list_thing_principals(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _principals.list_thing_principals(self._state, params)

    def list_thing_principals_v2(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _principals.list_thing_principals_v2(self._state, params)

    def list_principal_things(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _principals.list_principal_things(self._state, params)

    def trust_ca_certificate(self, pem: str) -> str:
        """Let devices be registered under this CA certificate (sandbox set-up); its id."""
        return _certificates.trust_ca_certificate(self._state, pem)

    def set_certificate_issuer(self, issuer: CertificateIssuer) -> None:
        """What issues CreateKeysAndCertificate's key pairs and certificates."""
        with self._state.lock:
            self._state.certificate_issuer = issuer

    def watch_certificates(self, listener: Callable[[str], None]) -> None:
        """Call `listener(certificate_id)` after a certificate is registered, changes or goes."""
        _certificates.add_listener(self._state, listener)

    def unwatch_certificates(self, listener: Callable[[str], None]) -> None:
        """Stop calling a listener given to `watch_certificates`."""
        _certificates.remove_listener(self._state, listener)

    def set_connect_policy(self, policy: ConnectPolicy) -> None:
        """Which AWS IoT policy authorizes CONNECTs from now on (`sandbox up --connect-policy`)."""
        with self._state.lock:
            self._state.connect_policy = ConnectPolicy(policy)

    def authorize_connection(self, certificate_der: bytes, client_id: str) -> str:
        """The thing an MQTT CONNECT connects as; `ConnectionRefusedByPolicyError` if refused."""
        return _principals.authorize_connection(self._state, certificate_der, client_id)

    def certificate_status(self, certificate_id: str) -> str | None:
        """A certificate's status, None when it is not (or no longer) registered."""
        return _certificates.certificate_status(self._state, certificate_id)

    def certificate_pem(self, certificate_id: str) -> str | None:
        """A registered certificate's PEM, None when it is not (or no longer) registered."""
        return _certificates.certificate_pem(self._state, certificate_id)

    def trust_anchor_pems(self) -> list[str]:
        """Every registered CA and device certificate, PEM (what the TLS front trusts)."""
        return _certificates.trust_anchor_pems(self._state)

    # -------------------------------------------------------------------- jobs
    def create_job(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _control.create_job(self._state, params)

    def update_job(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _control.update_job(self._state, params)

    def describe_job(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _control.describe_job(self._state, params)

    def get_job_document(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _control.get_job_document(self._state, params)

    def list_jobs(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _control.list_jobs(self._state, params)

    def list_job_executions_for_job(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _control.list_job_executions_for_job(self._state, params)

    def list_job_executions_for_thing(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _control.list_job_executions_for_thing(self._state, params)

    def describe_job_execution(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The control plane's DescribeJobExecution (iot service shape)."""
        return _control.describe_job_execution(self._state, params)

    def cancel_job(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _control.cancel_job(self._state, params)

    def cancel_job_execution(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _control.cancel_job_execution(self._state, params)

    def delete_job(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _control.delete_job(self._state, params)

    # --------------------------------------------------------------- inspection
    def recount(self, job_id: str) -> dict[str, int]:
        """The job's status counts recomputed from its executions (for cross-checks)."""
        return _inspection.recount(self._state, job_id)

    def counts(self, job_id: str) -> dict[str, int]:
        """The job's maintained status counters."""
        return _inspection.counts(self._state, job_id)

    def execution_history(
        self, *, job_id: str | None = None, thing_name: str | None = None
    ) -> list[dict[str, Any]]:
        """Executions with every status change and the way (`via`) it came in."""
        return _inspection.execution_history(self._state, job_id=job_id, thing_name=thing_name)

    # ----------------------------------------------------- shadows and indexing
    @property
    def named_shadows(self) -> ShadowTable:
        """The named shadows the MQTT shadow service keeps (persisted and indexed)."""
        return self._state.shadows

    def get_indexing_configuration(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _indexing.get_indexing_configuration(self._state, params)

    def update_indexing_configuration(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _indexing.update_indexing_configuration(self._state, params)

    def search_index(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _indexing.search_index(self._state, params)

    def get_statistics(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _indexing.get_statistics(self._state, params)

    def get_buckets_aggregation(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return _indexing.get_buckets_aggregation(self._state, params)

    # -------------------------------------------------------------- persistence
    def export_state(self) -> dict[str, Any]:
        """Everything needed to rebuild the engine, as JSON-ready data."""
        return _persistence.export_state(self._state)

    def import_state(self, state: Mapping[str, Any]) -> None:
        """Replace the engine's state with an `export_state()` result."""
        _persistence.import_state(self._state, state)
