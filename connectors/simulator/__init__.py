"""Department simulator: realistic, deterministic department databases for demos, tests and benchmarks."""
