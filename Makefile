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
	.venv/bin/python bench/pipeline_bench.py

bench-connectors:
	bash scripts/bootstrap.sh
	bash scripts/stack.sh up
	.venv/bin/python bench/connector_bench.py

bench-risk:
	bash scripts/bootstrap.sh
	bash scripts/stack.sh up
	.venv/bin/python bench/risk_bench.py
