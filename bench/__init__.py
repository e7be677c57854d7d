"""`make bench`: Interlook's benchmarks (see bench/run.py and bench/RESULTS.md)."""
