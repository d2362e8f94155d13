"""Benchmarks on the local stack and the OpenStack simulator: `make bench` writes bench/RESULTS.md."""
