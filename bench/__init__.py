"""Benchmarks: each hot path against its natural peer in the same process."""
