"""Benchmarks: measurements written to benchmarks/results/, never asserted in tests."""
