"""The benchmarks: `benchmarks/run.py` compares client → backend directly, through pyproxy and through nginx.

Modules here are importable (`benchmarks.loadgen`, ...) so the unit tests can drive them; `run.py`,
`loadgen.py` and `backend.py` are also runnable as scripts.
"""
