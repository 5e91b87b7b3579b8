"""Benchmarks: scripts that print figures (throughput, latency percentiles, memory); run with python -m."""
