#!/usr/bin/env bash
# Mutation testing of the pure core with mutmut: `make mutate [TARGETS="gates job-ids"]`.
#
# Each target names the functions to mutate (mutmut mutant-name globs) and the focused tests
# that must kill them. A target runs in its own scratch copy of the tracked files (so the
# checkout is never touched and each target gets its own test selection), with the
# hypothesis profile "mutation" (fixed seed, no shrinking). Results (score per target and
# every surviving mutant with its diff and reason) go to benchmarks/results/mutation.json.
#
# To follow a module that moves, edit its row below: the files, the function globs, the tests.
set -euo pipefail
main() {
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/bootstrap.sh
source scripts/env.sh
command -v mutmut >/dev/null || { echo "mutate: mutmut is missing: run make venv" >&2; exit 2; }

# name | files to mutate (globs) | mutant-name globs | focused tests
TARGETS_TABLE=$(cat <<'EOF'
gates|orchestrator/gates.py|orchestrator.gates.*|tests/orchestrator/test_gates.py tests/orchestrator/test_boundaries.py
job-ids|orchestrator/job_settings.py|orchestrator.job_settings.x_job_id_for__* orchestrator.job_settings.x_job_config__* orchestrator.job_settings.x_abort_threshold__*|tests/orchestrator/test_boundaries.py tests/orchestrator/test_planner.py
planner-halt|orchestrator/planner.py|orchestrator.planner.x__judge_running_wave__* orchestrator.planner.x__advance__*|tests/orchestrator/test_planner.py tests/orchestrator/test_planner_properties.py tests/orchestrator/test_boundaries.py tests/orchestrator/test_planner_events.py
endpoint|job_documents/_endpoint.py|job_documents._endpoint.*|tests/job_documents/test_endpoint.py tests/job_documents/test_boundaries.py
pem|job_documents/_pem.py|job_documents._pem.*|tests/job_documents/test_validator.py tests/job_documents/test_boundaries.py tests/job_documents/test_pem_boundaries.py tests/job_documents/test_catalog.py
signature|job_documents/_signature.py|job_documents._signature.*|tests/job_documents/test_signature.py tests/job_documents/test_boundaries.py
size|job_documents/validator.py|job_documents.validator.x__check_size_and_secrets__*|tests/job_documents/test_validator.py tests/job_documents/test_boundaries.py
status|device_handler/status.py|device_handler.status.*|tests/device_handler/test_status_boundaries.py tests/device_handler/test_core.py
recovery|device_handler/transaction.py|device_handler.transaction.x_recovery_for__* device_handler.transaction.x_classify_rejection__*|tests/device_handler/test_core.py tests/device_handler/test_power_cut.py
verify|orchestrator/verify.py|orchestrator.verify.x_find_drift__* orchestrator.verify.x_lookup_plan__* orchestrator.verify.x_wave_checks__* orchestrator.verify.x_device_report__* orchestrator.verify.x_target_endpoint__* orchestrator.verify.x__other_statuses__* orchestrator.verify.x_off_target_query__*|tests/orchestrator/test_verify.py
sampling|orchestrator/sampling.py orchestrator/targets.py|orchestrator.sampling.* orchestrator.targets.*|tests/orchestrator/test_sampling.py tests/orchestrator/test_wave_targets.py
sandbox-policy|infra/sandbox/engine/_policies.py infra/sandbox/engine/_timers.py infra/sandbox/engine/_rollout.py infra/sandbox/engine/_devices.py|infra.sandbox.engine._policies.* infra.sandbox.engine._timers.x_process_due__* infra.sandbox.engine._rollout.x_release_batch__* infra.sandbox.engine._rollout.x__release__* infra.sandbox.engine._rollout.x__after_release__* infra.sandbox.engine._rollout.x__default_budget__* infra.sandbox.engine._rollout.x_enqueue_targets__* infra.sandbox.engine._devices.x__arm_step__*|tests/sandbox/test_timing.py tests/sandbox/test_policy_boundaries.py tests/sandbox/test_scheduling.py tests/sandbox/test_policy_mutants.py tests/sandbox/test_conformance.py tests/sandbox/test_conformance_rollout.py tests/sandbox/test_rollout_pace.py
connect-rule|infra/sandbox/engine/_principals.py|infra.sandbox.engine._principals.x_authorize_connection__* infra.sandbox.engine._principals.x__only_thing__*|tests/sandbox/test_certificates.py tests/sandbox/test_connect_rule_engine.py tests/sandbox/test_connect_policy.py
EOF
)
# The fast subset `make test` runs (scripts/mutate.sh --fast): gates and job ids.
FAST="gates job-ids"

selected=${TARGETS:-}
if [ "${1:-}" = "--fast" ]; then selected=$FAST; fi
out=${MUTATION_RESULTS:-$root/benchmarks/results/mutation.json}
work=$(mktemp -d "${TMPDIR:-/tmp}/ca-migrate-mutate.XXXXXX")
trap 'rm -rf "$work"' EXIT
export HYPOTHESIS_PROFILE=mutation
results=()

while IFS='|' read -r name files names tests; do
  [ -z "$name" ] && continue
  if [ -n "$selected" ] && ! [[ " $selected " == *" $name "* ]]; then continue; fi
  echo "== mutate $name ($names)" >&2
  copy="$work/$name"
  mkdir -p "$copy"
  git ls-files -z --cached --others --exclude-standard | grep -zv '^benchmarks/results/' \
    | xargs -0 cp --parents -t "$copy" 2>/dev/null || true
  python - "$copy/pyproject.toml" "$files" "$tests" <<'PY'
import re, sys
path, files, tests = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
text = open(path).read()
def toml_list(items): return "[" + ", ".join(f'"{i}"' for i in items) + "]"
text = re.sub(r"(?ms)^only_mutate = \[.*?^\]", f"only_mutate = {toml_list(files)}", text)
text = re.sub(r"(?ms)^pytest_add_cli_args_test_selection = \[.*?^\]",
              f"pytest_add_cli_args_test_selection = {toml_list(tests)}", text)
open(path, "w").write(text)
PY
  started=$(date +%s)
  # shellcheck disable=SC2086  # globs are mutmut's, not the shell's
  (cd "$copy" && set -f && nice -n 10 mutmut run $names >"$copy/mutmut.log" 2>&1) || {
    echo "mutate: mutmut failed for $name (log: kept below)" >&2
    tail -30 "$copy/mutmut.log" >&2
    exit 1
  }
  seconds=$(( $(date +%s) - started ))
  (cd "$copy" && set -f && python - "$name" "$seconds" $names >"$copy/result.json") <<'PY'
import fnmatch, json, subprocess, sys
name, seconds, globs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
listing = subprocess.run(["mutmut", "results", "--all", "true"], capture_output=True, text=True,
                         check=True).stdout
statuses = {}
for line in listing.splitlines():
    mutant, _, status = line.strip().rpartition(": ")
    if mutant and any(fnmatch.fnmatchcase(mutant, g) for g in globs):
        statuses[mutant] = status
survivors = []
try:  # in process: `mutmut show` per survivor re-reads every mutant file
    from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant

    def show(mutant):
        return get_diff_for_mutant(mutant, path=find_mutant(mutant).path)
except ImportError:
    def show(mutant):
        return subprocess.run(["mutmut", "show", mutant], capture_output=True, text=True).stdout
for mutant, status in sorted(statuses.items()):
    if status in ("survived", "no tests"):
        diff = show(mutant)
        lines = [l for l in diff.splitlines() if l[:1] in "+-" and l[:3] not in ("+++", "---")]
        survivors.append({"mutant": mutant, "status": status, "diff": lines})
counts = {}
for status in statuses.values():
    counts[status] = counts.get(status, 0) + 1
print(json.dumps({"target": name, "seconds": seconds, "counts": counts, "survivors": survivors}))
PY
  results+=("$copy/result.json")
done <<<"$TARGETS_TABLE"

[ ${#results[@]} -gt 0 ] || { echo "mutate: no target matches '$selected'" >&2; exit 2; }
python scripts/mutation_report.py "$out" "${results[@]}"
}
main "$@"
exit
