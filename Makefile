SHELL := /bin/bash
.PHONY: test demo bench venv fmt mutate
test:        ## the whole suite: ruff, ruff format --check, mypy --strict, import layers, pytest
	bash scripts/test.sh
demo:        ## the demo campaign on the local sandbox (make demo ARGS="--scenario bad-canary")
	bash scripts/demo.sh $(ARGS)
bench:       ## benchmarks; figures printed and written to benchmarks/results/*.json
	bash scripts/bootstrap.sh && . scripts/env.sh && python benchmarks/run.py
mutate:      ## mutation testing of the pure core (make mutate TARGETS="gates job-ids"); see docs/development.md
	bash scripts/mutate.sh
venv:
	bash scripts/bootstrap.sh
fmt:
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .
