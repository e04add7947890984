"""Benchmarks and evaluations, run as modules from the repo root: ``python -m bench.pipeline_bench`` etc."""
