"""Benchmark scripts: quality and speed measured side by side, written to benchmarks/results/."""
