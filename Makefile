# The two commands a fresh machine needs (see README):
#   make demo   — the platform's main job on the local embedded stack
#   make test   — every test, against real services the scripts install and start
.PHONY: demo test unit stack-up stack-down bench bench-connectors bench-risk

demo:
	bash scripts/bootstrap.sh
	.venv/bin/yurong demo

test:
	bash scripts/test.sh

unit:
	bash scripts/bootstrap.sh
	.venv/bin/python -m pytest tests/unit -q

stack-up:
	bash scripts/stack.sh up

stack-down:
	bash scripts/stack.sh down

bench:
	bash scripts/bootstrap.sh
	bash scripts/stack.sh up
	.venv/bin/python -m bench.pipeline_bench

bench-connectors:
	bash scripts/bootstrap.sh
	bash scripts/stack.sh up
	.venv/bin/python -m bench.connector_bench

bench-risk:
	bash scripts/bootstrap.sh
	bash scripts/stack.sh up
	.venv/bin/python -m bench.risk_bench
