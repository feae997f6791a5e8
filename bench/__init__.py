"""Benchmark scenarios over loadtest/, each printing Markdown (results in BENCHMARKS.md).

A package so that scenarios run as modules from the repository root
(`.venv/bin/python -m bench.service_benchmark`) and import the project's packages
like any other code. The harness itself (client, drivers, recorder, servers as child
processes, /proc counters) is loadtest's; a module here holds only what one scenario
measures and how it prints it.
"""
