"""The sandbox's AWS IoT Jobs engine: registry, jobs, executions, rollout, timers.

One object holds the whole service state behind one lock. The HTTP control
plane calls its operation methods with already-validated request parameters
(botocore member names) and renders what they return; device front ends use
the `JobsDataPlane` methods.

The package has one module per mechanism, and `JobsEngine` is a thin facade
over them:

- `_records`: things, groups, jobs, executions, history entries;
- `_state`: the shared state, its lock and the primitives every mechanism uses
  (status changes, new executions, snapshots, subscriber notification);
- `_timers`: the heap of deadlines, the scheduler thread, and `op()`, the
  lock / clock / flush prologue of every operation;
- `_rollout`: pacing of notifications (rollout rate, maintenance windows);
- `_schedule`: schedulingConfig (start, end, windows);
- `_policies`: retry, abort, completion, cancel;
- `_registry`: things, thing groups, membership;
- `_certificates` (records in `_identity`): certificates: registration, status,
  deletion, listing;
- `_principals`: certificates attached to things, and the device policy's connect rule;
- `_control`: the jobs control plane;
- `_devices`: the device data plane;
- `_inspection`: counters, recount, execution history;
- `_persistence`: export and import of the whole state.

Choices where AWS behaviour is unconfirmed live in `infra.sandbox.decisions`.
"""

from infra.sandbox.engine._certificates import certificate_id_of
from infra.sandbox.engine._facade import JobsEngine
from infra.sandbox.engine._identity import (
    ConnectionRefusedByPolicyError,
    ConnectPolicy,
    IssuedKeys,
)
from infra.sandbox.engine._records import HistoryEntry

__all__ = [
    "ConnectPolicy",
    "ConnectionRefusedByPolicyError",
    "HistoryEntry",
    "IssuedKeys",
    "JobsEngine",
    "certificate_id_of",
]
