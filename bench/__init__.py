"""Benchmarks of nser, run from the repository root as modules (`python -m bench.speed`)."""
