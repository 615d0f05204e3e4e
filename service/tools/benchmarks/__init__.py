"""Benchmarks: run as modules from the repository root, e.g.
``python -m service.tools.benchmarks.bench_feed``. Not tests: they measure, they do not pass or fail.
"""
