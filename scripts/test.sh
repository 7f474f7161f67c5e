#!/usr/bin/env bash
# The whole check suite, as CI runs it: lint, format, types, import layers, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
source scripts/env.sh
PKGS=(job_documents orchestrator device_handler infra)
echo "== ruff check" && ruff check .
echo "== ruff format --check" && ruff format --check .
echo "== mypy --strict" && mypy
echo "== import layers" && lint-imports
echo "== pytest"
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
exit "$rc"
