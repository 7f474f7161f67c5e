#!/usr/bin/env bash
# The main job: a demo campaign on the local sandbox (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
source scripts/env.sh
exec ca-migrate demo "$@"
