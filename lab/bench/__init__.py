"""`callpipe bench`: the benchmark suite, one module per measurement (see run.py)."""
