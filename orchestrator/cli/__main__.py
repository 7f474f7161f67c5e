"""`python -m orchestrator.cli`: the same as the `ca-migrate` console script."""

from orchestrator.cli import main

main()
